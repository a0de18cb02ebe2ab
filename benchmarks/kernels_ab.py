"""The fused kernels against torch's operations, stage by stage, with dropout and without, in one run
(the order alternates, fused first in even rounds; precision auto, each stage's own layout):

    python benchmarks/kernels_ab.py [--data_dir ../shared/data] [--steps 4] [--repeats 2] [--threads 2]

It prints examples/s for each measurement and, per case, the ratio of the means. It decides which
kernels a stage takes by default (docs/speed.md): the fused ones wherever they are faster.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from dataclasses import replace
from pathlib import Path

import torch

from factgpt.config import PERCEIVER_M, REFERENCE, GPTConfig
from factgpt.data import CharCorruptionDataset, NameDataset, read_text
from factgpt.lab.bench import Variant, time_training
from factgpt.model import GPT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", "--data-dir", default="../shared/data")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4, help="timed optimiser steps per measurement (4)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of fused and torch (2)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = Path(args.data_dir)
    corpus = CharCorruptionDataset(read_text(d / "wiki.txt"), 128, seed=0)
    pairs = NameDataset(corpus, read_text(d / "birth_places_train.tsv"))
    pretrain = replace(REFERENCE.pretrain_config(len(corpus), 0), learning_rate=REFERENCE.finetune.learning_rate)
    cases = []
    for p in (REFERENCE.dropout, 0.0):
        cfg = dict(vocab_size=corpus.vocab_size, embd_pdrop=p, resid_pdrop=p, attn_pdrop=p)
        cases += [(f"pretrain vanilla, dropout {p:g}", GPTConfig(**cfg), corpus, pretrain),
                  (f"finetune vanilla, dropout {p:g}", GPTConfig(**cfg), pairs,
                   REFERENCE.finetune_config(len(corpus), True, 0)),
                  (f"pretrain perceiver m={PERCEIVER_M}, dropout {p:g}",
                   GPTConfig(**cfg, perceiver=True, bottleneck_dim=PERCEIVER_M), corpus,
                   replace(REFERENCE.pretrain_config(len(corpus), 0, perceiver=True),
                           learning_rate=REFERENCE.finetune.learning_rate))]
    kinds = [Variant("fused kernels", kernels="fused"), Variant("torch's operations", kernels="torch")]
    for name, config, data, tc in cases:
        torch.manual_seed(0)
        model = GPT(config)
        speed: dict[str, list[float]] = {v.label: [] for v in kinds}
        for round_ in range(args.repeats):
            for variant in kinds if round_ % 2 == 0 else kinds[::-1]:
                row = time_training(copy.deepcopy(model), data, args.steps, "fast", variant, tc)
                speed[variant.label].append(row.examples_per_s)
                print(f"{name}, {variant.label}: {row.examples_per_s:.1f} examples/s ({row.precision})", flush=True)
        fused, plain = (statistics.mean(speed[v.label]) for v in kinds)
        print(f"{name}: fused / torch = {fused / plain:.2f}x", flush=True)


if __name__ == "__main__":
    main()
