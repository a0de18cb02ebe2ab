#!/usr/bin/env bash
# The demo's three reported worlds at one commit, one after another, alone on the cores.
cd /work/main && . .venv/bin/activate
for s in 0 1 2; do
  rm -rf runs/demo2/seed$s
  /usr/bin/time -f "%e s wall, %M KB at most" factgpt demo --out runs/demo2/seed$s --seed $s --quiet > runs/demo2/seed$s.out 2> runs/demo2/seed$s.err
done
