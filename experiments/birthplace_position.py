"""Accuracy by where the birthplace sits in the person's document, for several prediction files.

The perceiver's down-projection lets latent i read input positions <= i only, so in pretraining a
fact placed after the first m characters can be tied to the name only through the last position's
query. This measures whether accuracy falls for birthplaces past m.

    python experiments/birthplace_position.py --data_dir ../shared/data --m 64 NAME=PREDICTIONS ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from factgpt.data import read_questions, read_text, split_lines
from factgpt.lab.answers import accuracy_by_offset
from factgpt.people import birthplace_offsets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", "--data-dir", default="data")
    ap.add_argument("--m", type=int, default=64)
    ap.add_argument("runs", nargs="+", help="NAME=PREDICTIONS_FILE")
    args = ap.parse_args()
    d = Path(args.data_dir)
    questions = read_questions(d / "birth_dev.tsv", require_answers=True)
    offsets = birthplace_offsets(questions, read_text(d / "wiki.txt"))
    edges = [0, args.m // 2, args.m, 2 * args.m, 10_000]
    spans = [f"offset {lo}-{hi - 1 if hi < 10_000 else '…'}" for lo, hi in zip(edges, edges[1:])]
    header = "| run | " + " | ".join(spans)
    print(header + " |")
    print("|---|" + "---|" * (len(edges) - 1))
    for spec in args.runs:
        name, path = spec.split("=", 1)
        preds = split_lines(read_text(path))
        if len(preds) != len(questions):  # zip would silently score a shorter file against the wrong people
            raise SystemExit(f"{path}: {len(preds)} predictions for the {len(questions)} questions of birth_dev.tsv")
        rows = accuracy_by_offset(questions, preds, offsets, edges)
        cells = [f"{100 * r['correct'] / r['n']:.1f}% ({r['correct']}/{r['n']})" if r["n"] else "-" for r in rows]
        print(f"| {name} | " + " | ".join(cells) + " |")
    missing = sum(o is None for o in offsets)
    print(f"\n{missing} of {len(questions)} dev people have no document naming their birthplace (left out).")


if __name__ == "__main__":
    main()
