"""The knowledge probe: does the pretrained model know a person's birthplace?

For each probed person (people held out from finetuning, never dev people while settings are being
chosen), take their own wiki.txt line up to the first occurrence of their birthplace, let the model
continue it by greedy decoding, and count the person as known when the continuation starts with the
place. A model that scores here has memorised the name-to-place tie in the corpus's own wording;
finetuning then only has to teach it to give that tie back as an answer.

    Khatchig Mouradian is a journalist, writer and translator born in | Lebanon
    \\_________________________ prefix given ___________________________/ \\_ must follow _/

The held-out split is the last `n` lines of the finetuning file: the rest is what a recipe under
selection finetunes on, and their answers after finetuning are the second check. Where the pairs
are mixed into pretraining (the `mixed` recipe), the held-out people are left out of the mix and the
probe also asks them the question itself, `Where was NAME born?`, during pretraining.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import torch

from factgpt.data import Question, Vocab
from factgpt.decode import generate_batched
from factgpt.errors import FactgptError
from factgpt.evaluate import predict, score
from factgpt.model import GPT
from factgpt.people import biographies, birthplace_offsets, own_documents, person_of

T = TypeVar("T")

HELDOUT = 200  # finetuning lines held out to choose settings on (the last ones of the file)


@dataclass(frozen=True)
class ProbeItem:
    person: str  # NAME of `Where was NAME born?`
    prefix: str  # their own document up to the birthplace
    place: str  # the gold birthplace, which must come next


@dataclass
class ProbeSchedule:
    every: int  # epochs between probes (and one after the last epoch)
    items: list[ProbeItem]  # the people probed
    # the held-out people asked the question itself; only when pretraining has seen the question's
    # form (pairs mixed in), else empty: a model that never saw a `⁇` answer cannot give one
    questions: list[Question] = field(default_factory=list)


def split_heldout(questions: list[T], n: int = HELDOUT, *, source=None) -> tuple[list[T], list[T]]:
    """(finetuning part, held-out part) of a finetuning file's questions (or its lines): the
    held-out part is the last `n`, or the last tenth (at least one) of a file with fewer than 10 * n
    lines. `source` (the file) names it in the error."""
    if len(questions) < 2:
        raise FactgptError(f"{len(questions)} question line(s): holding people out needs at least two",
                           path=source, hint="give the whole finetuning file (birth_places_train.tsv)")
    n = min(n, max(1, len(questions) // 10))
    return questions[:-n], questions[-n:]


def probe_items(questions: list[Question], pretrain_text: str, *, max_prefix: int) -> list[ProbeItem]:
    """The questions whose person has a document naming their birthplace within its first
    `max_prefix` characters (the model never sees more of a document than its block allows)."""
    docs = biographies(pretrain_text)
    items = []
    for q, at in zip(questions, birthplace_offsets(questions, pretrain_text)):
        if at and at + len(q.answer) <= max_prefix:
            name = person_of(q.question)
            items.append(ProbeItem(name, own_documents(name, docs)[0][:at], q.answer))
    return items


def run_probe(model: GPT, vocab: Vocab, items: list[ProbeItem]) -> float:
    """The share of items whose greedy continuation starts with the place (0 for no items)."""
    if not items:
        return 0.0
    was_training = model.training
    model.eval()
    try:
        steps = max(len(it.place) for it in items)
        with torch.no_grad():
            outs = generate_batched(model, [vocab.encode(it.prefix) for it in items], steps, stop_id=None)
    finally:
        model.train(was_training)
    hits = sum(vocab.decode(out[len(it.prefix):]).startswith(it.place) for out, it in zip(outs, items))
    return hits / len(items)


def run_qa_probe(model: GPT, vocab: Vocab, questions: list[Question]) -> float:
    """The share of `questions` answered correctly by greedy decoding (0 for none)."""
    if not questions:
        return 0.0
    was_training = model.training
    try:
        with torch.no_grad():
            s = score(questions, predict(model, questions, vocab))
    finally:
        model.train(was_training)
    return s.correct / s.total
