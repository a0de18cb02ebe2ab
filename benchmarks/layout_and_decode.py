"""Packed vs grouped rows at the default precision (vanilla pretraining; the order alternates, packed
first in even rounds), and perceiver vs vanilla decoding like for like (both untrained, so both
decode every step, twice), in one run:

    python benchmarks/layout_and_decode.py [--data_dir ../shared/data] [--steps 4] [--repeats 2] [--dropout P]

The AVX2 comparison of records/2026-11-29_bench_avx2 is `--steps 10 --repeats 3`; `--dropout 0` times the recipes and
phases without dropout (fast300, late dropout's first epochs), where attention runs fused.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from factgpt.config import PERCEIVER_M, REFERENCE, GPTConfig
from factgpt.data import CharCorruptionDataset, read_questions, read_text
from factgpt.evaluate import predict
from factgpt.lab.bench import Variant, time_training
from factgpt.model import GPT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", "--data-dir", default="../shared/data")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4, help="timed optimiser steps of 128 per measurement (4)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of packed and grouped (2)")
    ap.add_argument("--dropout", type=float, default=REFERENCE.dropout, help="the dropout (the reference's 0.1)")
    ap.add_argument("--decode", action=argparse.BooleanOptionalAction, default=True, help="time decoding too (yes)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = Path(args.data_dir)
    corpus = CharCorruptionDataset(read_text(d / "wiki.txt"), 128, seed=0)
    torch.manual_seed(0)
    p = args.dropout
    vanilla = GPT(GPTConfig(vocab_size=corpus.vocab_size, embd_pdrop=p, resid_pdrop=p, attn_pdrop=p))
    pretrain = REFERENCE.pretrain_config(len(corpus), 0)
    layouts = [Variant("packed rows, precision auto", layout="packed", kernels="fused"),
               Variant("grouped rows, precision auto", layout="grouped", kernels="fused")]
    for round_ in range(args.repeats):
        for variant in layouts if round_ % 2 == 0 else layouts[::-1]:
            row = time_training(copy.deepcopy(vanilla), corpus, args.steps, "fast", variant, pretrain)
            print(f"pretrain, {variant.label}, dropout {p:g}: {row.examples_per_s:.1f} examples/s", flush=True)
    if not args.decode:
        return
    questions = read_questions(d / "birth_dev.tsv")
    torch.manual_seed(0)
    perceiver = GPT(GPTConfig(vocab_size=corpus.vocab_size, perceiver=True, bottleneck_dim=PERCEIVER_M)).eval()
    vanilla.eval()
    for name, model in [("vanilla", vanilla), (f"perceiver m={PERCEIVER_M}", perceiver)] * 2:
        t0 = time.perf_counter()
        predict(model, questions, corpus.vocab)
        print(f"decode {len(questions)} questions, untrained {name}: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
