"""How the model answers: ranked answers for one question, and where wrong answers come from.

- `rank_answers`: beam search over characters until the closing ⁇, giving the most probable
  distinct answers with their probabilities. The greedy answer (argmax character by character,
  what `evaluate` scores) need not be among them: on the reference checkpoint, "Michestr" is
  greedy for the first dev question while "Paris" (3%) and "London" (2%) are more probable.
- `analyze`: sorts every prediction into one category, first match wins:
    correct            the gold answer;
    no_document        the person has no line of their own in the pretraining corpus;
    in_own_document    wrong, but the predicted place occurs in the person's own document;
    similar_name       wrong, and equal to the birthplace (finetuning people) or a place in the
                       document (pretraining people) of the person whose name is most similar
                       (character trigram similarity): the study's similar-name hypothesis;
    prior              wrong, and one of the k most frequent finetuning answers;
    other              none of these.
  It also measures, over all wrong answers, how often the prediction matches the most similar
  person against how often it matches a random person (the chance baseline).
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from factgpt.data import MASK_CHAR, MASK_ID, Question, Vocab
from factgpt.figures import pyplot, save_figure
from factgpt.model import GPT
from factgpt.outputs import atomic_write_text
from factgpt.people import biographies, document_name, own_documents, person_of

CATEGORIES = ["correct", "no_document", "in_own_document", "similar_name", "prior", "other"]


# ----------------------------------------------------------------------------------------------
# answers with probabilities


@dataclass
class Ranked:
    answer: str
    probability: float  # of the answer's characters and the closing ⁇, given the question


@torch.no_grad()
def rank_answers(model: GPT, vocab: Vocab, question: str, *, k: int = 5, beam: int = 16,
                 max_chars: int = 32) -> list[Ranked]:
    """The k most probable distinct answers to `question` (beam search, closed by ⁇)."""
    model.eval()
    device = model.pos_emb.device
    prompt = vocab.encode(question + MASK_CHAR)
    beams: list[tuple[list[int], float]] = [([], 0.0)]  # (answer ids, log-probability)
    done: list[tuple[list[int], float]] = []
    bs = model.get_block_size()
    for _ in range(max_chars + 1):
        if not beams:
            break
        seqs = [(prompt + ids)[-bs:] for ids, _ in beams]
        x = torch.tensor(seqs, dtype=torch.long, device=device)
        logits, _ = model(x)
        logp = F.log_softmax(logits[:, -1, :].float(), dim=-1)  # (beams, V)
        cand = []
        top = torch.topk(logp, min(beam, logp.shape[1]), dim=-1)
        for (ids, lp), vals, idxs in zip(beams, top.values.tolist(), top.indices.tolist()):
            for v, i in zip(vals, idxs):
                cand.append((ids + [i], lp + v))
        cand.sort(key=lambda c: -c[1])
        beams = []
        for ids, lp in cand:
            if ids[-1] == MASK_ID:
                done.append((ids[:-1], lp))
            elif len(ids) < max_chars and len(beams) < beam:
                beams.append((ids, lp))
        done.sort(key=lambda c: -c[1])
        if len(done) >= k and beams and beams[0][1] < done[k - 1][1]:
            break  # no open beam can beat the k-th finished answer
    out, seen = [], set()
    for ids, lp in done:
        text = vocab.decode(ids)
        if text not in seen:
            seen.add(text)
            out.append(Ranked(text, math.exp(lp)))
        if len(out) == k:
            break
    return out


@torch.no_grad()
def answer_probability(model: GPT, vocab: Vocab, question: str, answer: str) -> float:
    """P(answer⁇ | question⁇) under the model: its confidence in that answer."""
    model.eval()
    ids = vocab.encode(question + MASK_CHAR + answer + MASK_CHAR)[-model.get_block_size() - 1:]
    x = torch.tensor([ids[:-1]], device=model.pos_emb.device)
    logp = F.log_softmax(model(x)[0][0].float(), dim=-1)
    n = len(answer) + 1
    targets = torch.tensor(ids[-n:], device=x.device)
    return math.exp(float(logp[-n:].gather(1, targets[:, None]).sum()))


def answer_lines(model: GPT, vocab: Vocab, question: str, k: int = 5) -> list[str]:
    """What `factgpt ask` says of one question: the greedy answer (what `evaluate` scores) with its
    probability, then the k most probable answers by beam search."""
    from factgpt.evaluate import ANSWER_STEPS, predict

    greedy = predict(model, [Question(question, None, 1)], vocab)[0]
    lines = [f"greedy: {greedy}  (probability {answer_probability(model, vocab, question, greedy):.2%})",
             "most probable answers (beam search):"]
    lines += [f"  {r.probability:7.2%}  {r.answer}" for r in rank_answers(model, vocab, question, k=k,
                                                                          max_chars=ANSWER_STEPS)]
    return lines


def fill(model: GPT, vocab: Vocab, prompt: str, steps: int, *, temperature: float | None = None,
         top_k: int | None = None, seed: int = 0) -> tuple[str, str | None]:
    """The prompt continued for `steps` characters, greedily or (a temperature or top-k given)
    sampled; and, for a `prefix⁇suffix⁇` prompt, the span the model filled in (else None)."""
    from factgpt.decode import generate_reference
    from factgpt.errors import FactgptError

    if not prompt:
        raise FactgptError("--prompt is empty", hint="give at least one character to continue")
    if top_k is not None and top_k > len(vocab):
        raise FactgptError(f"--top_k {top_k} is more than the vocabulary's {len(vocab)} characters")
    ids = vocab.encode(prompt, source="--prompt")
    out = generate_reference(model, ids, steps, temperature=temperature or 1.0, top_k=top_k,
                             sample=temperature is not None or top_k is not None,
                             generator=torch.Generator().manual_seed(seed))
    text = vocab.decode(out)
    asks_span = prompt.count(MASK_CHAR) == 2 and prompt.endswith(MASK_CHAR)
    return text, text[len(prompt):].split(MASK_CHAR)[0] if asks_span else None


# ----------------------------------------------------------------------------------------------
# names


def trigrams(name: str) -> set[str]:
    s = f"  {name.lower()} "
    return {s[i:i + 3] for i in range(len(s) - 2)}


class NameIndex:
    """Most similar name by Jaccard similarity of character trigrams, through an inverted index."""

    def __init__(self, entries: list[KnownPerson]) -> None:
        self.entries = entries
        self.grams = [trigrams(e.name) for e in entries]
        self.index: dict[str, list[int]] = defaultdict(list)
        for i, g in enumerate(self.grams):
            for t in g:
                self.index[t].append(i)

    def most_similar(self, name: str, exclude: str) -> int | None:
        q = trigrams(name)
        shared = Counter(i for t in q for i in self.index.get(t, ()))
        best, best_sim = None, 0.0
        for i, inter in shared.items():
            if self.entries[i].name == exclude:
                continue
            sim = inter / (len(q) + len(self.grams[i]) - inter)
            if sim > best_sim:
                best, best_sim = i, sim
        return best


@dataclass(frozen=True)
class KnownPerson:
    """Someone the model may have learnt about: a finetuning pair or a pretraining document."""
    name: str
    birthplace: str | None = None  # known for finetuning people
    document: str | None = None  # known for pretraining people

    def matches(self, prediction: str) -> bool:
        """The prediction is this person's birthplace, or occurs in their document."""
        if self.birthplace is not None:
            return prediction == self.birthplace
        return bool(prediction) and self.document is not None and prediction in self.document


@dataclass
class CategorizedAnswer:
    """One question's prediction and the category it falls in."""
    person: str  # the NAME the question asks about
    gold: str  # the correct birthplace
    prediction: str  # the model's answer
    category: str  # one of CATEGORIES
    similar_person: str | None  # the most similar other name, None if no name shares a trigram


@dataclass
class CalibrationBucket:
    """Questions whose answer the model gave a probability in [lo, hi)."""
    bucket: str  # "lo-hi", e.g. "0.8-1.0"
    n: int  # questions in the bucket
    accuracy: float | None  # share of them answered correctly; None for an empty bucket
    mean_confidence: float | None  # mean model probability of the answers; None for an empty bucket


@dataclass
class Analysis:
    rows: list[CategorizedAnswer]  # one per question, in order
    counts: dict[str, int]
    similar_rate: float  # wrong answers matching the most similar person
    chance_rate: float  # wrong answers matching a random person
    n_wrong: int
    calibration: list[CalibrationBucket] = field(default_factory=list)
    # what could not be computed from the inputs given, and why: {category or "calibration": reason}
    missing: dict[str, str] = field(default_factory=dict)


def known_people(finetune: list[Question], docs: list[str]) -> list[KnownPerson]:
    """Everyone in the training data: the finetuning people, then the pretraining documents."""
    entries = [KnownPerson(person_of(q.question), birthplace=q.answer) for q in finetune]
    entries += [KnownPerson(document_name(d), document=d) for d in docs]
    return entries


def prior_answers(finetune: list[Question], k: int) -> set[str]:
    """The k most frequent finetuning answers."""
    return {a for a, _ in Counter(q.answer for q in finetune if q.answer).most_common(k)}


def categorize(gold: str, pred: str, own: list[str], similar: KnownPerson | None, prior: set[str]) -> str:
    """The first matching category of CATEGORIES (see the module docstring)."""
    if pred == gold:
        return "correct"
    if not own:
        return "no_document"
    if pred and any(pred in d for d in own):
        return "in_own_document"
    if similar and similar.matches(pred):
        return "similar_name"
    if pred in prior:
        return "prior"
    return "other"


def chance_match(entries: list[KnownPerson], pred: str, rng: random.Random, draws: int = 50) -> float:
    """Share of `draws` random people that `pred` matches."""
    # the chance rate is an average over many random people
    return sum(entries[rng.randrange(len(entries))].matches(pred) for _ in range(draws)) / draws


def calibration_buckets(rows: list[CategorizedAnswer], confidences: list[float]) -> list[CalibrationBucket]:
    """Accuracy against the model's confidence, in buckets of width 0.2."""
    out = []
    edges = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0001]
    for lo, hi in zip(edges, edges[1:]):
        sel = [r.category == "correct" for r, c in zip(rows, confidences) if lo <= c < hi]
        mean_conf = [c for c in confidences if lo <= c < hi]
        out.append(CalibrationBucket(f"{lo:.1f}-{min(hi, 1.0):.1f}", len(sel),
                                     sum(sel) / len(sel) if sel else None,
                                     sum(mean_conf) / len(mean_conf) if mean_conf else None))
    return out


def analyze(questions: list[Question], predictions: list[str], pretrain_text: str,
            finetune: list[Question] | None = None, *, k_prior: int = 10, seed: int = 0,
            confidences: list[float] | None = None) -> Analysis:
    if len(questions) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(questions)} questions")
    docs = biographies(pretrain_text)
    finetune = finetune or []
    entries = known_people(finetune, docs)
    index = NameIndex(entries)
    prior = prior_answers(finetune, k_prior)
    rng = random.Random(seed)

    rows, counts = [], Counter()
    n_wrong = similar_hits = chance_hits = 0
    for q, pred in zip(questions, predictions):
        name = person_of(q.question)
        own = own_documents(name, docs)
        sim = index.most_similar(name, exclude=name)
        similar = entries[sim] if sim is not None else None
        if pred != q.answer and pred:
            n_wrong += 1
            similar_hits += bool(similar and similar.matches(pred))
            chance_hits += chance_match(entries, pred, rng)
        cat = categorize(q.answer, pred, own, similar, prior)
        counts[cat] += 1
        rows.append(CategorizedAnswer(name, q.answer, pred, cat, similar.name if similar else None))
    calibration = calibration_buckets(rows, confidences) if confidences is not None else []
    missing = {}
    if not finetune:
        missing["prior"] = ("not computed: the prior is the finetuning answers (--finetune_corpus_path), so answers "
                            "from it count as other, and similar names are sought among pretraining documents only")
    if confidences is None:
        missing["calibration"] = ("not computed: it needs the checkpoint that made the predictions "
                                  "(--reading_params_path)")
    return Analysis(rows, {c: counts.get(c, 0) for c in CATEGORIES},
                    similar_hits / n_wrong if n_wrong else 0.0, chance_hits / n_wrong if n_wrong else 0.0,
                    n_wrong, calibration, missing)


def summary_markdown(a: Analysis, *, examples: int = 3, title: str = "Where the answers come from") -> str:
    total = sum(a.counts.values())
    lines = [f"# {title}", "", "| category | count | share |", "|---|---|---|"]
    for c in CATEGORIES:
        if c in a.missing:
            lines.append(f"| {c} | - | - |")
        else:
            lines.append(f"| {c} | {a.counts[c]} | {100 * a.counts[c] / total:.1f}% |")
    lines += [f"\n{what}: {why}." for what, why in a.missing.items()]
    lines += ["", f"Similar-name hypothesis: of {a.n_wrong} wrong (non-empty) answers, "
              f"{100 * a.similar_rate:.1f}% match the birthplace or a place in the document of the person with the "
              f"most similar name; a random person's gives {100 * a.chance_rate:.1f}% (chance baseline).", ""]
    for c in CATEGORIES:
        ex = [r for r in a.rows if r.category == c][:examples]
        if ex:
            lines.append(f"**{c}**: " + "; ".join(
                f"{r.person}: {r.prediction!r} (gold {r.gold!r}"
                + (f", similar: {r.similar_person}" if c == "similar_name" else "") + ")" for r in ex))
            lines.append("")
    if a.calibration:
        lines += ["## Calibration (model probability of its own answer)", "",
                  "| confidence | questions | accuracy | mean confidence |", "|---|---|---|---|"]
        for b in a.calibration:
            acc = "-" if b.accuracy is None else f"{100 * b.accuracy:.1f}%"
            mc = "-" if b.mean_confidence is None else f"{b.mean_confidence:.2f}"
            lines.append(f"| {b.bucket} | {b.n} | {acc} | {mc} |")
    return "\n".join(lines) + "\n"


def write_categories_tsv(a: Analysis, path) -> None:
    """One line per question: person, gold, prediction, category, similar person (None if none)."""
    atomic_write_text(path, "person\tgold\tprediction\tcategory\tsimilar_person\n" + "".join(
        f"{r.person}\t{r.gold}\t{r.prediction}\t{r.category}\t{r.similar_person}\n" for r in a.rows))


def write_chart(a: Analysis, path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(CATEGORIES[::-1], [a.counts[c] for c in CATEGORIES[::-1]], color="#58a")
    ax.set_xlabel("questions")
    ax.set_title("Where the answers come from", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def accuracy_by_offset(questions: list[Question], predictions: list[str], offsets: list[int | None],
                       edges: list[int]) -> list[dict]:
    """Accuracy of the predictions in buckets of the birthplace's offset in the document."""
    rows = []
    for lo, hi in zip(edges, edges[1:]):
        sel = [p == q.answer for q, p, o in zip(questions, predictions, offsets) if o is not None and lo <= o < hi]
        rows.append({"from": lo, "to": hi, "n": len(sel), "correct": sum(sel)})
    return rows


# ----------------------------------------------------------------------------------------------
# the `analyze` command's inputs, checked


def analyze_files(predictions_path, eval_path, pretrain_path, finetune_path=None, params_path=None) -> Analysis:
    """`analyze` on files: one prediction a line for each labelled question, the pretraining corpus,
    optionally the finetuning pairs (similar names and the prior) and the checkpoint that made the
    predictions (calibration). Wrong counts and unknown characters are refused with the file and line."""
    from factgpt.data import read_questions, read_text, split_lines
    from factgpt.errors import FactgptError
    from factgpt.stages import load_for_inference

    questions = read_questions(eval_path, require_answers=True)
    preds = split_lines(read_text(predictions_path))
    if len(preds) != len(questions):
        raise FactgptError(f"{len(preds)} predictions for {len(questions)} questions in {eval_path}",
                           path=predictions_path, hint="one prediction a line, in the question file's order")
    finetune = read_questions(finetune_path, require_answers=True) if finetune_path else None
    confidences = None
    if params_path:
        model, vocab = load_for_inference(params_path, pretrain_path)
        for i, (q, p) in enumerate(zip(questions, preds), start=1):  # a character the model lacks: name its line
            vocab.encode(q.question, source=eval_path, line=q.line)
            vocab.encode(p, source=predictions_path, line=i)
        confidences = [answer_probability(model, vocab, q.question, p) for q, p in zip(questions, preds)]
    return analyze(questions, preds, read_text(pretrain_path), finetune, confidences=confidences)
