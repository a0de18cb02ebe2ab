"""Does a pretrained model know the facts? Continue each dev person's own document up to the
birthplace and check whether greedy decoding writes the gold place next.

    python benchmarks/knowledge_probe.py --data-dir ../shared/data NAME=PRETRAINED_CHECKPOINT ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from factgpt.analysis import biographies, birthplace_offsets, own_documents, person_of
from factgpt.data import read_questions, read_text
from factgpt.decode import generate_batched
from factgpt.stages import load_for_inference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--max-offset", type=int, default=100, help="only places starting before this offset")
    ap.add_argument("runs", nargs="+", help="NAME=CHECKPOINT")
    args = ap.parse_args()
    d = Path(args.data_dir)
    text = read_text(d / "wiki.txt")
    questions = read_questions(d / "birth_dev.tsv", require_answers=True)
    docs = biographies(text)
    items = []
    for q, off in zip(questions, birthplace_offsets(questions, text)):
        if off is not None and 0 < off < args.max_offset:
            doc = own_documents(person_of(q.question), docs)[0]
            items.append((doc[:off], q.answer))
    for spec in args.runs:
        name, path = spec.split("=", 1)
        model, vocab = load_for_inference(path, d / "wiki.txt")  # a reference .params file too: its vocabulary
        outs = generate_batched(model, [vocab.encode(p) for p, _ in items], 24, stop_id=None)
        hits = sum(vocab.decode(o[len(p):]).startswith(a) for o, (p, a) in zip(outs, items))
        print(f"{name}: writes the gold birthplace after its own document's prefix for {hits} of {len(items)} "
              f"dev people ({100 * hits / len(items):.1f}%)")


if __name__ == "__main__":
    main()
