#!/usr/bin/env bash
# The full recipe's vanilla rows on this machine's 2 CPU cores, from commit 557a69c (runs/wt-fused).
# Resumable: run it again and reproduce continues from the last resume point.
cd /work/main/runs/wt-fused
echo 19 > /proc/self/autogroup  # setsid starts an autogroup of its own, where nice alone has no effect
. .venv/bin/activate
exec nice -n 19 factgpt reproduce --data_dir /work/shared/data --budget full --probe_every 25 \
  --rows baseline vanilla_nopretrain vanilla_pretrain --out /work/main/runs/full_fused --threads 2 --quiet "$@"
