"""Pretraining loss by position in the example, for several checkpoints.

The perceiver's latent i reads input positions <= i, so a prediction at position t >= m sees the
first m characters and the character at t, nothing in between. If that is why it loses accuracy,
its loss should rise past position m while the vanilla model's does not.

    python experiments/loss_by_position.py --corpus ../shared/data/wiki.txt --m 64 NAME=CHECKPOINT ...
"""

from __future__ import annotations

import argparse

import torch
from torch.nn import functional as F

from factgpt.checkpoint import load_checkpoint
from factgpt.config import BLOCK_SIZE
from factgpt.data import PAD_ID, CharCorruptionDataset, read_text


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--m", type=int, default=64)
    ap.add_argument("--examples", type=int, default=2938)
    ap.add_argument("runs", nargs="+", help="NAME=CHECKPOINT")
    args = ap.parse_args()
    ds = CharCorruptionDataset(read_text(args.corpus), BLOCK_SIZE, seed=1234)
    x, y = ds.draw_batch(torch.arange(args.examples) % len(ds))  # the same examples for every model
    edges = [0, args.m // 2, args.m, args.m + args.m // 2, BLOCK_SIZE]
    print("| model | " + " | ".join(f"positions {lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:])) + " |")
    print("|---|" + "---|" * (len(edges) - 1))
    for spec in args.runs:
        name, path = spec.split("=", 1)
        model = load_checkpoint(path).build_model().eval()
        sums = torch.zeros(BLOCK_SIZE)
        counts = torch.zeros(BLOCK_SIZE)
        for start in range(0, len(x), 256):
            xb, yb = x[start:start + 256], y[start:start + 256]
            logits, _ = model(xb)
            loss = F.cross_entropy(logits.transpose(1, 2), yb, ignore_index=PAD_ID, reduction="none")  # (B, T)
            mask = yb != PAD_ID
            sums += (loss * mask).sum(0)
            counts += mask.sum(0)
        cells = []
        for lo, hi in zip(edges, edges[1:]):
            c = counts[lo:hi].sum()
            cells.append(f"{float(sums[lo:hi].sum() / c):.3f}" if c else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nMean cross-entropy (nats per character) over the non-PAD targets of {len(x)} corrupted examples "
          "(seed 1234), by the position of the prediction.")


if __name__ == "__main__":
    main()
