"""`factgpt bench`: the reference path and the fast path side by side, in one run.

For pretraining and finetuning batches it times a few optimiser steps of each path (after one
warm-up step) and reports examples/s and useful (non-PAD target) tokens/s; for evaluate it times
the reference's one-question-at-a-time decoding on a sample and the batched KV-cache decoding on
every question, and checks that both give the same answers on the sample.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from factgpt.checkpoint import load_checkpoint
from factgpt.config import BLOCK_SIZE, GPTConfig, TrainConfig, final_tokens_for
from factgpt.data import CharCorruptionDataset, NameDataset, read_questions, read_text
from factgpt.evaluate import predict
from factgpt.model import GPT, Dropout
from factgpt.train import Trainer


class FirstN:
    """The first n examples of a dataset (same draws, same order), for short timed runs."""

    def __init__(self, ds, n: int) -> None:
        self.ds, self.n = ds, min(n, len(ds))
        self.seq_len = ds.seq_len
        if hasattr(ds, "generator"):
            self.generator = ds.generator

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return self.ds[i]

    def draw_batch(self, idx):
        return self.ds.draw_batch(idx)

    def reseed(self, seed: int) -> None:
        self.ds.reseed(seed)


@dataclass
class Variant:
    """One way to run the fast path, for the row that shows what a change bought."""
    label: str
    precision: str = "auto"
    layout: str = "grouped"
    torch_dropout: bool = False  # torch's Bernoulli masks instead of model.keep_mask


# Each row adds one change to the one above it; the last is the default.
FAST_VARIANTS = (
    Variant("fast fp32, packed rows, torch's dropout masks", precision="fp32", layout="packed", torch_dropout=True),
    Variant("+ fast dropout masks", precision="fp32", layout="packed"),
    Variant("+ rows grouped by length", precision="fp32"),
    Variant("+ precision auto (the default)"),
)


@dataclass
class Row:
    stage: str
    path: str  # the label of the path and its settings
    examples_per_s: float
    useful_tokens_per_s: float
    loss: float


@dataclass
class DecodeResult:
    reference_qps: float  # questions/s, one at a time with the whole prefix recomputed
    fast_qps: float  # questions/s, batched with the KV cache
    fast_seconds: float  # all questions, batched
    n_questions: int
    sample_agrees: bool  # batched answers equal one-at-a-time answers on the timed sample
    perceiver_seconds: float | None = None  # all questions, perceiver, batched with its cache


def time_training(model: GPT, ds, batch_size: int, steps: int, path: str, variant: Variant,
                  final_tokens: int) -> Row:
    def trainer(n_steps: int) -> Trainer:
        tc = TrainConfig(max_epochs=1, batch_size=batch_size, learning_rate=6e-4, final_tokens=final_tokens,
                         engine=path, precision="fp32" if path == "reference" else variant.precision,
                         layout=variant.layout)
        t = Trainer(model, FirstN(ds, n_steps * batch_size), tc, progress=False)
        for m in model.modules():
            if isinstance(m, Dropout) and variant.torch_dropout:
                m.fast = False
        return t

    trainer(1).train()  # warm-up: first-call allocations, kernel selection
    t0 = time.perf_counter()
    st = trainer(steps).train()
    dt = time.perf_counter() - t0
    label = "reference fp32" if path == "reference" else variant.label
    return Row("", label, st.examples / dt, st.useful_tokens / dt, st.losses[-1])


def run_bench(data_dir: str | Path, *, steps: int = 4, params: str | Path | None = None,
              decode_sample: int = 20, variants=FAST_VARIANTS, seed: int = 0, bottleneck_dim: int = 64,
              log=None) -> tuple[list[Row], DecodeResult]:
    """Returns (training rows, decoding result); `log` (a callable) hears progress. Pretraining
    and finetuning are timed on the reference path, then on each fast variant, from the same
    starting model; the perceiver's pretraining at the default settings closes the table."""
    data_dir = Path(data_dir)
    say = log or (lambda *_: None)
    corpus = CharCorruptionDataset(read_text(data_dir / "wiki.txt"), BLOCK_SIZE,
                                   source=data_dir / "wiki.txt", seed=seed)
    names = NameDataset(corpus, read_text(data_dir / "birth_places_train.tsv"),
                        source=data_dir / "birth_places_train.tsv")
    torch.manual_seed(seed)
    base = GPT(GPTConfig(vocab_size=corpus.vocab_size))
    final = final_tokens_for(len(corpus))
    runs = [("reference", variants[-1])] + [("fast", v) for v in variants]
    rows = []
    for stage, ds, bs in (("pretrain", corpus, 128), ("finetune", names, 256)):
        for path, variant in runs:
            say(f"timing {stage} {path} {variant.label} ({steps} steps of {bs})")
            r = time_training(copy.deepcopy(base), ds, bs, steps, path, variant, final)
            r.stage = stage
            rows.append(r)
    torch.manual_seed(seed)
    perceiver = GPT(GPTConfig(vocab_size=corpus.vocab_size, perceiver=True, bottleneck_dim=bottleneck_dim))
    say(f"timing pretrain perceiver m={bottleneck_dim} ({steps} steps of 128)")
    r = time_training(perceiver, corpus, 128, steps, "fast", variants[-1], final)
    r.stage, r.path = "pretrain", f"perceiver m={bottleneck_dim}, {variants[-1].label}"
    rows.append(r)

    model = load_checkpoint(params).build_model() if params is not None else base
    model.eval()
    questions = read_questions(data_dir / "birth_dev.tsv")
    say(f"decoding {decode_sample} questions one at a time")
    t0 = time.perf_counter()
    ref = predict(model, questions[:decode_sample], corpus.vocab, engine="reference")
    ref_qps = decode_sample / (time.perf_counter() - t0)
    say(f"decoding all {len(questions)} questions batched")
    t0 = time.perf_counter()
    fast = predict(model, questions, corpus.vocab, engine="fast")
    fast_s = time.perf_counter() - t0
    say(f"decoding all {len(questions)} questions batched, perceiver")
    perceiver.eval()
    t0 = time.perf_counter()
    predict(perceiver, questions, corpus.vocab, engine="fast")
    perceiver_s = time.perf_counter() - t0
    return rows, DecodeResult(ref_qps, len(questions) / fast_s, fast_s, len(questions), fast[:decode_sample] == ref,
                              perceiver_s)


def format_report(rows: list[Row], decode: DecodeResult, n_documents: int | None = None) -> str:
    lines = ["| stage | path | examples/s | useful tokens/s | speed-up | last loss |", "|---|---|---|---|---|---|"]
    ref = {r.stage: r.examples_per_s for r in rows if r.path.startswith("reference")}
    for r in rows:
        lines.append(f"| {r.stage} | {r.path} | {r.examples_per_s:.1f} | {r.useful_tokens_per_s:,.0f} | "
                     f"{r.examples_per_s / ref[r.stage]:.2f}x | {r.loss:.3f} |")
    d = decode
    lines += ["", f"| evaluate ({d.n_questions} questions) | questions/s | all take |", "|---|---|---|",
              f"| reference (one at a time) | {d.reference_qps:.1f} | "
              f"{d.n_questions / d.reference_qps:.1f} s (extrapolated) |",
              f"| fast (batched, KV cache) | {d.fast_qps:.1f} | {d.fast_seconds:.2f} s |"]
    if d.perceiver_seconds is not None:
        lines.append(f"| fast, perceiver (batched, its cache) | {d.n_questions / d.perceiver_seconds:.1f} | "
                     f"{d.perceiver_seconds:.2f} s ({d.perceiver_seconds / d.fast_seconds:.2f}x vanilla) |")
    lines += ["", f"fast answers equal the reference's on the timed sample: {d.sample_agrees}"]
    if n_documents:
        pre = [r for r in rows if r.stage == "pretrain"]
        vanilla, perceiver = pre[-2], pre[-1]  # the default fast variant, then the perceiver
        ev, ep = n_documents / vanilla.examples_per_s, n_documents / perceiver.examples_per_s
        lines += ["", f"One pretraining epoch ({n_documents:,} documents) at the default settings: vanilla "
                  f"{ev:.1f} s, {perceiver.path.split(',')[0]} {ep:.1f} s; the reference recipe's 650 epochs: "
                  f"{650 * ev / 3600:.1f} h + {650 * ep / 3600:.1f} h (batch 128, the reference's dropout)."]
    return "\n".join(lines)
