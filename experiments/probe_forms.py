"""Which form of a fact can a pretrained model give back? Three probes over the 200 people held out
from birth_places_train.tsv (its last lines; never dev), each scored by greedy decoding:

- line: their own wiki.txt line up to the birthplace; the place must come next (the knowledge probe
  that `--probe_every` runs during pretraining);
- name: only ``NAME.`` (how every line opens); the place must appear in the next 112 characters;
- cloze: the line in the pretraining objective's own form with exactly the place removed,
  ``before⁇after⁇``; the place must come next, as a masked span does in pretraining.

    python experiments/probe_forms.py --data_dir ../shared/data CHECKPOINT [CHECKPOINT ...]

A model can complete a line it has memorised (line, name) and still not give the place back when
it is asked for it out of the line's order (cloze); finetuning asks it that way (`NAME...?⁇place`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from factgpt.data import MASK_CHAR, read_questions, read_text
from factgpt.decode import generate_batched
from factgpt.model import GPT
from factgpt.people import biographies, own_documents
from factgpt.probe import probe_items, split_heldout
from factgpt.stages import load_for_inference

MAX_PREFIX = 112  # the longest truncated document pretraining shows


def continuations(model: GPT, vocab, prompts: list[str], steps: int) -> list[str]:
    encoded = [vocab.encode(p) for p in prompts]
    outs = generate_batched(model, encoded, steps, stop_id=None)
    return [vocab.decode(o[len(e):]) for o, e in zip(outs, encoded)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", "--data-dir", default="data")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("checkpoints", nargs="+", help="pretrained factgpt checkpoints")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = Path(args.data_dir)
    text = read_text(d / "wiki.txt")
    _, heldout = split_heldout(read_questions(d / "birth_places_train.tsv", require_answers=True))
    items = probe_items(heldout, text, max_prefix=MAX_PREFIX)
    docs = biographies(text)
    clozes = []
    for it in items:
        doc = own_documents(it.person, docs)[0][:MAX_PREFIX]
        at = len(it.prefix)
        clozes.append(doc[:at] + MASK_CHAR + doc[at + len(it.place):] + MASK_CHAR)
    steps = max(len(it.place) for it in items)
    for path in args.checkpoints:
        t0 = time.perf_counter()
        model, vocab = load_for_inference(path)
        with torch.no_grad():
            line = continuations(model, vocab, [it.prefix for it in items], steps)
            name = continuations(model, vocab, [it.person + "." for it in items], MAX_PREFIX)
            cloze = continuations(model, vocab, clozes, steps)
        n = len(items)
        hits = [sum(o.startswith(it.place) for o, it in zip(line, items)),
                sum(it.place in o for o, it in zip(name, items)),
                sum(o.startswith(it.place) for o, it in zip(cloze, items))]
        print(f"{path}: {n} held-out people; line {hits[0]} ({100 * hits[0] / n:.1f}%), "
              f"name {hits[1]} ({100 * hits[1] / n:.1f}%), cloze {hits[2]} ({100 * hits[2] / n:.1f}%); "
              f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
