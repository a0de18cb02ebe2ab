import sys, torch
from pathlib import Path
from factgpt.checkpoint import load_checkpoint
from factgpt.data import read_questions, read_text
from factgpt.probe import probe_items, run_probe
d = Path(sys.argv[1])
text = read_text(d / "corpus.txt")
for split in ("train", "heldout"):
    qs = read_questions(d / f"{split}.tsv", require_answers=True)
    items = probe_items(qs, text, max_prefix=112)
    for ck in sorted(d.glob("*pretrain_seed*.pretrain.safetensors")):
        c = load_checkpoint(ck); model = c.build_model()
        print(split, ck.name.split("_seed")[0], f"known {run_probe(model, c.vocab, items):.2f} of {len(items)}")
