"""Predictions and accuracy: greedy answers to `Where was NAME born?`, and the baselines.

A prediction is what the reference takes: the model continues ``question⁇`` greedily for up to
32 characters, and the answer is the text between the first and the second ⁇.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from factgpt.data import MASK_CHAR, Question, Vocab
from factgpt.decode import generate_batched, generate_reference
from factgpt.errors import FactgptError
from factgpt.model import GPT

ANSWER_STEPS = 32  # characters generated after the question (reference)


@dataclass
class Score:
    correct: int
    total: int

    @property
    def percent(self) -> float:
        return self.correct / self.total * 100 if self.total else 0.0

    def line(self) -> str:
        """The reference's line, floats and all: `Correct: 25.0 out of 500.0: 5.0%`."""
        return f"Correct: {float(self.correct)} out of {float(self.total)}: {self.percent}%"


def encode_prompts(questions: list[Question], vocab: Vocab, block_size: int,
                   source: str | Path | None = None) -> list[list[int]]:
    prompts = []
    for q in questions:
        text = q.question + MASK_CHAR
        if len(text) >= block_size:
            raise FactgptError(f"the question takes {len(text)} characters with its ⁇, which leaves "
                               f"no room for an answer in the block of {block_size}", path=source,
                               line=q.line, hint="shorten the question")
        prompts.append(vocab.encode(text, source=source, line=q.line))
    return prompts


def answer_from(completion: str) -> str:
    """The text between the first and the second ⁇ (all after the first if there is no second)."""
    parts = completion.split(MASK_CHAR)
    return parts[1] if len(parts) > 1 else ""


def predict(model: GPT, questions: list[Question], vocab: Vocab, *, engine: str = "fast",
            source: str | Path | None = None, progress=None) -> list[str]:
    """Greedy answers for every question: batched with a KV cache and fused attention (engine
    "fast") or one at a time without a cache, with the reference's explicit attention (engine
    "reference"; `progress` wraps the questions, e.g. tqdm). The model's attention is restored
    after, as a probe asks a model in the middle of training."""
    if engine not in ("fast", "reference"):
        raise ValueError(f"no engine {engine!r}: fast or reference")
    prompts = encode_prompts(questions, vocab, model.get_block_size(), source)
    before = model.config.engine
    model.set_engine(engine)
    try:
        if engine == "fast":
            outs = generate_batched(model, prompts, ANSWER_STEPS)
        else:
            it = progress(prompts) if progress else prompts
            outs = [generate_reference(model, p, ANSWER_STEPS) for p in it]
    finally:
        model.set_engine(before)
    return [answer_from(vocab.decode(o)) for o in outs]


def score(questions: list[Question], predictions: list[str]) -> Score | None:
    """Exact-match accuracy, or None where the file has no answers."""
    if any(q.answer is None for q in questions):
        return None
    if len(predictions) != len(questions):
        raise ValueError("one prediction per question is needed")
    correct = sum(q.answer == p for q, p in zip(questions, predictions))
    return Score(correct, len(questions))


def most_frequent_answer(questions: list[Question]) -> str:
    """The most frequent gold answer (ties broken by first appearance)."""
    return Counter(q.answer for q in questions if q.answer is not None).most_common(1)[0][0]


def mistakes(questions: list[Question], predictions: list[str], k: int = 5) -> list[str]:
    """A few wrong answers, minGPT-style, for a quick look at what the model does."""
    out = []
    for q, p in zip(questions, predictions):
        if q.answer is not None and q.answer != p:
            out.append(f"{q.question} -> {p!r} (gold {q.answer!r})")
            if len(out) == k:
                break
    return out
