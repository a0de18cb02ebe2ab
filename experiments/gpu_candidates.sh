#!/usr/bin/env bash
# Pretraining recipe candidates on one GPU, each a process of its own (experiments/heldout_recipes.txt,
# or $RECIPES): pretraining with the knowledge probe on the 200 held-out training people, then
# held-out QA after finetuning on the other 1,800 (never dev), once finetuning everything and once
# with the MLPs and embeddings frozen. Logs and probe curves go into $OUT/heldout.tgz; the models
# named in $KEEP come back beside it. NAMES picks recipes by name (every line of the file otherwise).
# Up to three processes at once pretrain at nearly their speed alone on an H200 (0.58 s a vanilla
# epoch alone, 0.70 with three; nine at once took 1.85 s each: records/2026-11-28_bench_h200).
# This is the heldout step of benchmarks/gpu_check.sh as it ran on 2026-11-28 (commits aa17665 and
# 43e80ad; records/2026-11-28_gpu_recipes).
# usage, from the repository root on the GPU machine, with a copy of ../shared:
#   [OUT=gpu_out] [NAMES="fast380 d05_380"] [KEEP=fast380] bash experiments/gpu_candidates.sh [SECONDS]
set -u
limit=${1:-540}  # the whole script; pretraining stops QA_RESERVE seconds before the end
DEADLINE=$((SECONDS + limit))
OUT=${OUT:-gpu_out}
SHARED=${FACTGPT_SHARED:-../shared}
RUNS=${RUNS:-runs/gpu}/heldout
RECIPES=${RECIPES:-experiments/heldout_recipes.txt}
NAMES=${NAMES:-}
KEEP=${KEEP:-}
QA_RESERVE=${QA_RESERVE:-120}
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
{ date -u; nvidia-smi; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
} > "$OUT/env.txt" 2>&1
t=$((DEADLINE - SECONDS - 30 - QA_RESERVE)); [ "$t" -lt 10 ] && t=10
while read -r name variant ft_dropout flags; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    [[ -n "$NAMES" && " $NAMES " != *" $name "* ]] && continue
    ckpt=$RUNS/$name.safetensors
    rm -f "$ckpt" "$ckpt.resume"  # what an earlier call on this machine left is not this run's
    # shellcheck disable=SC2086  # $flags is several words on purpose
    { echo "recipe $name: $variant $flags"
      timeout "$t" python3 -m factgpt pretrain "$variant" "$SHARED/data/wiki.txt" --writing_params_path "$ckpt" \
          --finetune_corpus_path "$SHARED/data/birth_places_train.tsv" --probe_every 25 --device cuda \
          --group_tokens 16384 --threads 1 --no_tensorboard --quiet $flags
      rc=$?
      echo "pretraining exit $rc"
      for f in "$ckpt" "$ckpt.resume"; do  # the curve, also of a run stopped in time
          [ -f "$f" ] && timeout 60 python3 experiments/probe_curve.py "$f" && break
      done
      [ $rc -eq 0 ] && timeout $((DEADLINE - SECONDS > 10 ? DEADLINE - SECONDS : 10)) python3 -m factgpt heldout \
          --reading_params_path "$ckpt" --pretrain_corpus_path "$SHARED/data/wiki.txt" \
          --finetune_corpus_path "$SHARED/data/birth_places_train.tsv" --dropouts "$ft_dropout" \
          --frozen '' 'mlp|emb' --device cuda
    } > "$RUNS/$name.log" 2>&1 &
done < "$RECIPES"
wait
tar czf "$OUT/heldout.tgz" --exclude='*.resume' --exclude='*.safetensors' "$RUNS"
for name in $KEEP; do
    [ -f "$RUNS/$name.safetensors" ] && cp "$RUNS/$name.safetensors" "$OUT/"
done
date -u >> "$OUT/env.txt"
