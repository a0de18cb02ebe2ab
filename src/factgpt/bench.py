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
from factgpt.model import GPT
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
class Row:
    stage: str
    path: str
    examples_per_s: float
    useful_tokens_per_s: float
    loss: float


def time_training(model: GPT, ds, batch_size: int, steps: int, path: str, precision: str,
                  final_tokens: int) -> Row:
    def trainer(n_steps: int) -> Trainer:
        tc = TrainConfig(max_epochs=1, batch_size=batch_size, learning_rate=6e-4,
                         final_tokens=final_tokens, path=path, precision=precision)
        return Trainer(model, FirstN(ds, n_steps * batch_size), tc, progress=False)

    trainer(1).train()  # warm-up: first-call allocations, kernel selection
    t0 = time.perf_counter()
    st = trainer(steps).train()
    dt = time.perf_counter() - t0
    return Row("", f"{path} {precision}", st.examples / dt, st.useful_tokens / dt, st.losses[-1])


def run_bench(data_dir: str | Path, *, steps: int = 4, params: str | Path | None = None,
              decode_sample: int = 20, precisions=("fp32", "bf16"), seed: int = 0, log=None):
    """Returns (training rows, decode rows); `log` (a callable) hears progress."""
    data_dir = Path(data_dir)
    say = log or (lambda *_: None)
    corpus = CharCorruptionDataset(read_text(data_dir / "wiki.txt"), BLOCK_SIZE,
                                   source=data_dir / "wiki.txt", seed=seed)
    names = NameDataset(corpus, read_text(data_dir / "birth_places_train.tsv"),
                        source=data_dir / "birth_places_train.tsv")
    torch.manual_seed(seed)
    base = GPT(GPTConfig(vocab_size=corpus.vocab_size))
    final = final_tokens_for(len(corpus))
    paths = [("reference", "fp32")] + [("fast", p) for p in precisions]
    rows = []
    for stage, ds, bs in (("pretrain", corpus, 128), ("finetune", names, 256)):
        for path, prec in paths:
            say(f"timing {stage} {path} {prec} ({steps} steps of {bs})")
            r = time_training(copy.deepcopy(base), ds, bs, steps, path, prec, final)
            r.stage = stage
            rows.append(r)

    if params is not None:
        model = load_checkpoint(params).build_model()
    else:
        model = base
    model.eval()
    questions = read_questions(data_dir / "birth_dev.tsv")
    say(f"decoding {decode_sample} questions one at a time")
    t0 = time.perf_counter()
    ref = predict(model, questions[:decode_sample], corpus.vocab, fast=False)
    ref_qps = decode_sample / (time.perf_counter() - t0)
    say(f"decoding all {len(questions)} questions batched")
    t0 = time.perf_counter()
    fast = predict(model, questions, corpus.vocab, fast=True)
    fast_s = time.perf_counter() - t0
    decode = {"reference_qps": ref_qps, "fast_qps": len(questions) / fast_s, "fast_seconds": fast_s,
              "n_questions": len(questions), "sample_agrees": fast[:decode_sample] == ref}
    return rows, decode


def format_report(rows: list[Row], decode: dict) -> str:
    lines = ["| stage | path | examples/s | useful tokens/s | speed-up | last loss |", "|---|---|---|---|---|---|"]
    ref = {r.stage: r.examples_per_s for r in rows if r.path.startswith("reference")}
    for r in rows:
        lines.append(f"| {r.stage} | {r.path} | {r.examples_per_s:.1f} | {r.useful_tokens_per_s:,.0f} | "
                     f"{r.examples_per_s / ref[r.stage]:.2f}x | {r.loss:.3f} |")
    lines += ["", "| evaluate | questions/s | 500 questions take |", "|---|---|---|",
              f"| reference (one at a time) | {decode['reference_qps']:.1f} | "
              f"{decode['n_questions'] / decode['reference_qps']:.1f} s (extrapolated) |",
              f"| fast (batched, KV cache) | {decode['fast_qps']:.1f} | {decode['fast_seconds']:.2f} s |",
              "", f"fast answers equal the reference's on the timed sample: {decode['sample_agrees']}"]
    return "\n".join(lines)
