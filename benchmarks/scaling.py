"""Forward+backward time of vanilla and perceiver against sequence length, with fitted exponents.

The study's written answer claims the perceiver costs O(d*m + L*m^2) against the vanilla
model's O(l^2*d + l*d^2). This measures it: for l = 128 .. 2048 (doubling), at fixed m, the
median wall time of one forward+backward pass, and the slope of log(time) on log(l) fitted over
the longest lengths (where the l^2 term, if any, dominates).

    python benchmarks/scaling.py [--m 64] [--batch 4] [--repeats 5] [--threads 2] [--out records/DATE_scaling/README.md]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

from factgpt.config import GPTConfig
from factgpt.model import GPT


def time_step(model: GPT, batch: int, length: int, repeats: int) -> float:
    x = torch.randint(2, model.config.vocab_size, (batch, length))
    times = []
    for i in range(repeats + 1):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        _, loss = model(x, x)
        loss.backward()
        if i:  # the first pass warms up allocations
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def slope(xs: list[float], ys: list[float]) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.mean(lx), statistics.mean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lengths", default="128,256,512,1024,2048")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lengths = [int(v) for v in args.lengths.split(",")]
    rows = {}
    for variant in ("vanilla", "perceiver"):
        for length in lengths:
            cfg = GPTConfig(vocab_size=256, block_size=length, perceiver=variant == "perceiver",
                            bottleneck_dim=args.m, embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
            rows[variant, length] = time_step(GPT(cfg).train(), args.batch, length, args.repeats)
            print(f"{variant:9s} l={length:5d}  {rows[variant, length] * 1000:9.1f} ms", flush=True)
    tail = lengths[-3:]
    fit = {v: slope(tail, [rows[v, n] for n in tail]) for v in ("vanilla", "perceiver")}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [f"Forward+backward of one batch of {args.batch}, 4 layers, 8 heads, d = 256, m = {args.m}, fp32, "
             f"dropout 0 (fused attention), {args.threads} threads, median of {args.repeats}; "
             f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}, "
             f"commit {commit}.", "",
             "| length l | vanilla (ms) | perceiver (ms) | vanilla / perceiver |", "|---|---|---|---|"]
    for n in lengths:
        v, p = rows["vanilla", n], rows["perceiver", n]
        lines.append(f"| {n} | {v * 1000:.1f} | {p * 1000:.1f} | {v / p:.2f} |")
    lines += ["", f"Fitted growth exponent of time in l over l = {tail[0]}..{tail[-1]}: vanilla "
              f"{fit['vanilla']:.2f}, perceiver {fit['perceiver']:.2f}.",
              "Command: `python benchmarks/scaling.py " + " ".join(
                  f"--{k} {v}" for k, v in vars(args).items() if v is not None and k != "out") + "`"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
