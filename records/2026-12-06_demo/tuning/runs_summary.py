"""The tuning runs' table (world seed 100): each run folder's documents, held-out answers per row
(its predictions against its heldout.tsv) and each stage's settings, read from its files alone.

    python runs_summary.py RUNS_DIR
"""
import glob
import json
import os
import sys

for d in sorted(glob.glob(os.path.join(sys.argv[1], "*")), key=os.path.getmtime):
    st = json.load(open(f"{d}/stages.json"))
    held = [line.rstrip("\n").split("\t")[1] for line in open(f"{d}/heldout.tsv", encoding="utf-8")]
    docs = open(f"{d}/corpus.txt", encoding="utf-8").read().splitlines()
    out = []
    for k, v in st.items():
        t = v.get("train", {})
        if k.endswith(".pretrain"):
            g, losses = v.get("model", {}), v.get("losses", [])
            last = sum(losses[-50:]) / max(1, len(losses[-50:]))
            out.append(f"{k.split('_seed')[0]}.pre L{g.get('n_layer')} C{g.get('n_embd')} m{g.get('bottleneck_dim')} "
                       f"ep{t.get('max_epochs')} lr{t.get('learning_rate')} {v.get('seconds')}s loss{last:.2f}")
        if k.endswith(".finetune"):
            out.append(f"{k.split('_seed')[0]}.ft ep{t.get('max_epochs')} lr{t.get('learning_rate')} fr{t.get('frozen')!r}")
    acc = []
    for p in sorted(glob.glob(f"{d}/*.heldout.predictions")):
        preds = open(p, encoding="utf-8").read().splitlines()
        acc.append(f"{os.path.basename(p).split('_seed')[0]} {sum(a == b for a, b in zip(preds, held))}/{len(held)}")
    print(os.path.basename(d), f"docs {len(docs)} maxlen {max(map(len, docs))}", "|", "; ".join(acc))
    print("   ", " | ".join(out))
