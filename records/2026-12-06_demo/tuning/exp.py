"""Demo experiments: world and recipe variants, the table's held-out accuracies and wall time."""
import sys, time, json, shutil
from dataclasses import replace
from pathlib import Path
import torch
import factgpt.synthetic as syn
from factgpt.recipes import DEMO
from factgpt.table import Files, TableRun
from factgpt.report import summarize

SHORT = [
    "{n} was born in {b} and worked in {w}.",
    "{n}, born in {b}, moved to {m}.",
    "Born in {b}, {n} died in {d}.",
    "{n} worked in {w}; {p} was born in {b}.",
    "{n} moved to {m}, though born in {b}.",
    "{n} lived in {m}. {P} was born in {b}.",
    "Who was {n}? One born in {b}, dead in {d}.",
]

def run(tag, seed=100, people=400, held=0.25, mentions=3, shapes=None, places=24, zipf=0.5, rows=("baseline", "vanilla_nopretrain", "vanilla_pretrain", "perceiver_pretrain"), **recipe):
    if shapes is not None:
        syn.SHAPES[:] = shapes
    import random as _r
    orig = syn.make_world
    world = syn.make_world(n_people=people, n_places=places, heldout_fraction=held, mentions=mentions, seed=seed)
    out = Path(f"/tmp/demo/runs/{tag}_s{seed}")
    shutil.rmtree(out, ignore_errors=True)
    paths = world.write(out)
    r = DEMO
    for k, v in recipe.items():
        if k.startswith("pre_"):
            r = replace(r, pretrain=replace(r.pretrain, **{k[4:]: v}))
        elif k.startswith("ft_"):
            r = replace(r, finetune=replace(r.finetune, **{k[3:]: v}))
        else:
            r = replace(r, **{k: v})
    lens = [len(d) for d in world.documents]
    t0 = time.perf_counter()
    table = TableRun(Files(paths["corpus"], paths["train"], paths["heldout"]), r, out, progress=False)
    res = summarize(table.run(seeds=1, first_seed=seed, rows=rows))
    dt = time.perf_counter() - t0
    losses = {k: round(sum(v["losses"][-50:]) / len(v["losses"][-50:]), 3) for k, v in table.records.items() if v.get("losses")}
    secs = {k: v.get("seconds") for k, v in table.records.items()}
    print(json.dumps({"tag": tag, "seed": seed, "time": round(dt, 1), "docs": len(lens), "max_len": max(lens),
                      "acc": {s.key: f"{s.correct}/{s.total}" for s in res}, "loss_end": losses, "secs": secs}), flush=True)

if __name__ == "__main__":
    torch.set_num_threads(2)
    exec(sys.argv[1])
