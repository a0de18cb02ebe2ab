"""Which people do different runs answer? From committed predictions alone (no model, no new
evaluation): each run's correct answers, how many of them two runs share, and how often each
correct birthplace is an answer in the finetuning file. A place that finetuning never gives as an
answer can come only from what pretraining stored; a frequent one can also be a good guess.

    python experiments/answer_overlap.py --data_dir ../shared/data \\
        full=records/2026-11-28_full/vanilla_pretrain_seed0.birth_dev.predictions \\
        fast=records/2026-11-28_fast/vanilla_pretrain_seed0.birth_dev.predictions
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", "--data-dir", default="data")
    ap.add_argument("--eval", default="birth_dev.tsv", help="the labelled questions the predictions answer")
    ap.add_argument("runs", nargs="+", help="LABEL=PREDICTIONS (one answer a line, in the questions' order)")
    args = ap.parse_args()
    d = Path(args.data_dir)
    gold = [line.split("\t")[1] for line in (d / args.eval).read_text(encoding="utf-8").splitlines()]
    train = (d / "birth_places_train.tsv").read_text(encoding="utf-8").splitlines()
    seen = Counter(line.split("\t")[1] for line in train)  # how often each place is a finetuning answer
    right = {}
    for spec in args.runs:
        label, path = spec.split("=", 1)
        pred = Path(path).read_text(encoding="utf-8").splitlines()
        if len(pred) != len(gold):
            raise SystemExit(f"{path}: {len(pred)} predictions for {len(gold)} questions")
        right[label] = {i for i, (p, g) in enumerate(zip(pred, gold)) if p == g}
    never = {i for i, g in enumerate(gold) if seen[g] == 0}
    print(f"{len(gold)} questions; the gold place is never a finetuning answer for {len(never)}; median "
          f"finetuning frequency of the gold places {statistics.median(seen[g] for g in gold):g}")
    print("| run | correct | gold never a finetuning answer | median finetuning frequency of its correct places |"
          + "".join(f" shared with {lab} |" for lab in right))
    print("|---|---|---|---|" + "---|" * len(right))
    for lab, ok in right.items():
        med = statistics.median(seen[gold[i]] for i in ok) if ok else float("nan")
        shared = "".join(f" {len(ok & o)} |" for o in right.values())
        print(f"| {lab} | {len(ok)} | {len(ok & never)} | {med:g} |{shared}")


if __name__ == "__main__":
    main()
