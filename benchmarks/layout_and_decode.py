"""Packed vs grouped rows at the default precision, and perceiver vs vanilla decoding like for like
(both untrained, so both decode every step), each alternated twice in one run:

    python benchmarks/layout_and_decode.py [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from factgpt.bench import Variant, time_training
from factgpt.config import PERCEIVER_M, REFERENCE, GPTConfig
from factgpt.data import CharCorruptionDataset, read_questions, read_text
from factgpt.evaluate import predict
from factgpt.model import GPT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = Path(args.data_dir)
    corpus = CharCorruptionDataset(read_text(d / "wiki.txt"), 128, seed=0)
    torch.manual_seed(0)
    vanilla = GPT(GPTConfig(vocab_size=corpus.vocab_size))
    pretrain = REFERENCE.pretrain_config(len(corpus), 0)
    layouts = [Variant("packed rows, precision auto", layout="packed"),
               Variant("grouped rows, precision auto", layout="grouped")]
    for variant in layouts * 2:
        row = time_training(copy.deepcopy(vanilla), corpus, 4, "fast", variant, pretrain)
        print(f"pretrain, {variant.label}: {row.examples_per_s:.1f} examples/s")
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
