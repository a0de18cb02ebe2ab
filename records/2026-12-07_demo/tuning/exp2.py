import sys, time, json, shutil
from dataclasses import replace
from pathlib import Path
import torch
from factgpt.synthetic import make_world
from factgpt.recipes import DEMO
from factgpt.table import Files, TableRun
from factgpt.report import summarize
def run(tag, seed=100, rows=("perceiver_pretrain",), people=200, held=0.5, **recipe):
    world = make_world(n_people=people, heldout_fraction=held, seed=seed)
    out = Path(f"/tmp/demo/runs/{tag}_s{seed}"); shutil.rmtree(out, ignore_errors=True)
    paths = world.write(out)
    r = DEMO
    for k, v in recipe.items():
        if k.startswith("pre_"): r = replace(r, pretrain=replace(r.pretrain, **{k[4:]: v}))
        elif k.startswith("ft_"): r = replace(r, finetune=replace(r.finetune, **{k[3:]: v}))
        else: r = replace(r, **{k: v})
    t0 = time.perf_counter()
    table = TableRun(Files(paths["corpus"], paths["train"], paths["heldout"]), r, out, progress=False)
    res = summarize(table.run(seeds=1, first_seed=seed, rows=rows))
    losses = {k: round(sum(v["losses"][-50:]) / 50, 3) for k, v in table.records.items() if v.get("losses")}
    print(json.dumps({"tag": tag, "time": round(time.perf_counter() - t0, 1), "acc": {s.key: f"{s.correct}/{s.total}" for s in res}, "loss_end": losses}), flush=True)
torch.set_num_threads(2)
exec(sys.argv[1])
