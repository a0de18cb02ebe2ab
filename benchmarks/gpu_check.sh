#!/usr/bin/env bash
# The project's own checks on a GPU machine, one after the other, each under a timeout:
#   tests  python -m pytest tests/test_cuda.py (conformance, training against the CPU's steps, resume,
#          the smoke table on CUDA)                                      -> $OUT/tests_cuda.log
#   bench  factgpt bench on the GPU                                      -> $OUT/bench.md, bench.log
#   table  the study's table at the full recipe, one group per pretraining batch
#                                                                        -> $OUT/full/, full.log
# $OUT/machine.txt gets the date, the commit, nvidia-smi, the CPU count, torch's version and each
# step's exit status. An H200 pretrains one model of the full recipe in about 6.5 minutes
# (records/2026-11-28_full); rerunning the table step resumes each stage from its resume point.
# usage, from the repository root, with the data in ../shared/data:
#   [OUT=gpu_out] [FACTGPT_COMMIT=abc1234] bash benchmarks/gpu_check.sh [tests] [bench] [table]
# FACTGPT_COMMIT names the commit where the machine's copy of .git may be stale.
set -u
STEPS=${*:-tests bench table}
OUT=${OUT:-gpu_out}
DATA=${DATA:-../shared/data}
TESTS_TIMEOUT=${TESTS_TIMEOUT:-300}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}
TABLE_TIMEOUT=${TABLE_TIMEOUT:-1800}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# the machine's own torch (a CUDA build) is used as it is: factgpt goes on the path, not through pip
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
has() { [[ " $STEPS " == *" $1 "* ]]; }

{ date -u
  echo "commit ${FACTGPT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
  nvidia-smi
  echo "cpus $(nproc)"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} > "$OUT/machine.txt" 2>&1

if has tests; then
    timeout "$TESTS_TIMEOUT" python3 -m pytest -p no:cacheprovider -rfE --durations=8 tests/test_cuda.py \
        > "$OUT/tests_cuda.log" 2>&1
    echo "tests/test_cuda.py exit $?" >> "$OUT/machine.txt"
fi

if has bench; then
    timeout "$BENCH_TIMEOUT" python3 -m factgpt bench --data_dir "$DATA" --device cuda \
        > "$OUT/bench.md" 2> "$OUT/bench.log"
    echo "bench exit $?" >> "$OUT/machine.txt"
fi

if has table; then
    timeout "$TABLE_TIMEOUT" python3 -m factgpt reproduce --data_dir "$DATA" --budget full --probe_every 25 \
        --device cuda --group_tokens 16384 --out "$OUT/full" > "$OUT/full.log" 2>&1
    echo "reproduce --budget full exit $? (124: stopped by the timeout; run again to resume)" >> "$OUT/machine.txt"
fi
date -u >> "$OUT/machine.txt"
