#!/usr/bin/env bash
# The GPU machine's checks in one run; each step writes into $OUT as it ends:
#   env    the machine and its torch (env.txt)
#   bench  `factgpt bench` on the GPU, with one-group-per-batch rows beside the defaults (bench.md),
#          first, alone on the GPU
#   tests  tests/test_cuda.py: conformance, training against the CPU, resume and the smoke table on
#          CUDA (tests_cuda.log), while the table runs
#   table  the study's table at the full recipe (`reproduce --budget full`): its rows run as three
#          processes at once (a 3.3M-parameter model leaves the GPU mostly idle between kernel
#          launches), each in its own folder under $RUNS; full.tgz holds their records, predictions
#          and logs (no checkpoints), from which `factgpt reproduce` rebuilds the report; the first
#          seed's two pretrained models come back beside it, and each pretrained model's held-out
#          QA (benchmarks/heldout_finetune.py) goes to ROWS_FOLDER.heldout_qa.txt.
#   heldout  issue 14's recipe candidates (benchmarks/heldout_recipes.txt, or $RECIPES), each a
#          process of its own beside the table: pretraining with the knowledge probe on the 200
#          held-out training people, then held-out QA after finetuning on the other 1,800 (never
#          dev), once finetuning everything and once with the MLPs and embeddings frozen
#          (--freeze 'mlp|emb'); their logs and probe curves go into heldout.tgz, the models named in
#          $KEEP come back. NAMES picks recipes by name (every line of the file otherwise). The next
#          lease: NAMES="fast380 d05_380 late100" bash benchmarks/gpu_check.sh 590 env heldout (three
#          at once, 0.70 s an epoch: about 4.5 minutes of pretraining, 15 probes each, then 2 QA runs
#          each); once late100 has finished on the CPU, ref380x3 takes its place. ref650's held-out
#          QA needs the full recipe's pretrained model: the table step's vanilla_pretrain (its
#          ROWS_FOLDER.heldout_qa.txt); the 2-core CPU run of it was lost (docs/results.md).
# Size the processes to the GPU (measured on an H200, docs/benchmarks.md): up to three at once
# each pretrain at nearly their speed alone (0.58 s a vanilla epoch alone, 0.60 with two, 0.70
# with three); nine at once took 1.85 s an epoch each: the GPU is then the limit, and all nine
# together move little more examples a second than three (about 13k against 12.6k).
# Usage, from the repository root on the GPU machine, with a copy of ../shared:
#   FACTGPT_SHARED=path/to/shared FACTGPT_COMMIT=abc1234 OUT=out_dir bash benchmarks/gpu_check.sh [SECONDS] [STEPS...]
# FACTGPT_COMMIT names the commit in the records: the lent machine's copy of the tree may carry a
# stale .git, whose HEAD the records would otherwise name.
# SECONDS bounds the whole script (540); the table's processes are stopped in time to pack what
# they made, and running the table step again resumes each stage from its last resume point.
set -u
case ${1:-} in  # SECONDS may be left out: the steps then start at $1
    ''|*[!0-9]*) limit=540 ;;
    *) limit=$1; shift ;;
esac
DEADLINE=$((SECONDS + limit))
STEPS=${*:-env tests bench table}
OUT=${OUT:-gpu_out}
SHARED=${FACTGPT_SHARED:-../shared}
RUNS=${RUNS:-runs/gpu}
DEVICE=${DEVICE:-cuda}  # cpu and BUDGET=smoke try the script out on a machine without a GPU
BUDGET=${BUDGET:-full}
SEEDS=${SEEDS:-0}  # "0 1": each row's seeds as processes of their own, side by side
# the table's processes, ';' between them
ROW_GROUPS=${ROW_GROUPS:-baseline vanilla_nopretrain;vanilla_pretrain;perceiver_pretrain}
RECIPES=${RECIPES:-benchmarks/heldout_recipes.txt}
NAMES=${NAMES:-}  # the recipes to run (default: every one in $RECIPES)
KEEP=${KEEP:-}  # recipe names whose pretrained models come back
# a trial of the heldout step on a CPU (DEVICE=cpu): each recipe pretrained for this many epochs and
# finetuned for one, instead of the recipe's own (empty: the recipes as written)
TRY_EPOCHS=${TRY_EPOCHS:-}
# seconds kept after each pretraining for its held-out QA (a process start, twice 10 finetuning epochs and
# 200 answers on a shared GPU): pretraining stops this long before the deadline
QA_RESERVE=${QA_RESERVE:-120}
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1 FACTGPT_SHARED="$SHARED"
# The machine's own torch (a CUDA build) is used as it is: factgpt goes on the path, not through pip.
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
py=python3
left() { local t=$((DEADLINE - SECONDS - $1)); echo $((t > 10 ? t : 10)); }
has() { [[ " $STEPS " == *" $1 "* ]]; }

if has env; then
    { date -u; echo "commit ${FACTGPT_COMMIT:-not given (FACTGPT_COMMIT)}"; nvidia-smi; nproc
      $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
    } > "$OUT/env.txt" 2>&1
fi

if has bench; then  # first, while the GPU has nothing else to do
    timeout "$(left 400)" $py -m factgpt bench --data-dir "$SHARED/data" --device "$DEVICE" --steps 10 \
        --params "$SHARED/conformance/vanilla_ref.params" --group_tokens 16384 > "$OUT/bench.md" 2> "$OUT/bench.log"
    echo "bench exit $?" >> "$OUT/env.txt"
fi

if has table; then
    # the same flags as the CPU run of docs/results/full, on the GPU, one group per pretraining batch
    common=(--data-dir "$SHARED/data" --budget "$BUDGET" --probe_every 25 --device "$DEVICE" --group_tokens 16384
            --threads 2 --quiet)
    t=$(left $((20 + QA_RESERVE)))
    IFS=';' read -r -a groups <<< "$ROW_GROUPS"
    for rows in "${groups[@]}"; do
        read -r -a row_list <<< "$rows"  # trims the spaces around a group
        [ ${#row_list[@]} -eq 0 ] && continue
        for seed in $SEEDS; do
            name=${row_list[-1]}_seed$seed
            { timeout "$t" $py -m factgpt reproduce "${common[@]}" --rows "${row_list[@]}" --first_seed "$seed" \
                  --out "$RUNS/$name"
              rc=$?
              # held-out QA of each pretrained model of a finished table, in a file of its own
              for f in "$RUNS/$name"/*.pretrain.safetensors; do
                  [ $rc -eq 0 ] && [ -f "$f" ] && timeout "$(left 10)" $py benchmarks/heldout_finetune.py \
                      --data-dir "$SHARED/data" --params "$f" --dropouts 0.1 --freeze '' 'mlp|emb' --device "$DEVICE" \
                      >> "$RUNS/$name.heldout_qa.txt" 2>&1
              done
            } >> "$RUNS/$name.log" 2>&1 &
        done
    done
fi

if has heldout; then
    mkdir -p "$RUNS/heldout"
    t=$(left $((30 + QA_RESERVE)))
    launched=0
    trial=() qa_trial=()
    # (late dropout would leave a trial's few epochs none with dropout, which pretrain refuses)
    [ -n "$TRY_EPOCHS" ] && trial=(--max_epochs "$TRY_EPOCHS" --dropout_start_epoch 0) qa_trial=(--epochs 1)
    while read -r name variant ft_dropout flags; do
        [[ -z "$name" || "$name" == \#* ]] && continue
        [[ -n "$NAMES" && " $NAMES " != *" $name "* ]] && continue
        launched=$((launched + 1))
        ckpt=$RUNS/heldout/$name.safetensors
        rm -f "$ckpt" "$ckpt.resume"  # what an earlier call on this machine left is not this run's
        # shellcheck disable=SC2086  # $flags is several words on purpose
        { echo "recipe $name: $variant $flags"
          timeout "$t" $py -m factgpt pretrain "$variant" "$SHARED/data/wiki.txt" --writing_params_path "$ckpt" \
              --finetune_corpus_path "$SHARED/data/birth_places_train.tsv" --probe_every 25 --device "$DEVICE" \
              --group_tokens 16384 --threads 1 --no_tensorboard --quiet $flags "${trial[@]}"
          rc=$?
          echo "pretraining exit $rc"
          for f in "$ckpt" "$ckpt.resume"; do  # the curve, also of a run stopped in time
              [ -f "$f" ] && timeout 60 $py benchmarks/probe_curve.py "$f" && break
          done
          [ $rc -eq 0 ] && timeout "$(left 10)" $py benchmarks/heldout_finetune.py --data-dir "$SHARED/data" \
              --params "$ckpt" --dropouts "$ft_dropout" --freeze '' 'mlp|emb' --device "$DEVICE" "${qa_trial[@]}"
        } > "$RUNS/heldout/$name.log" 2>&1 &
    done < "$RECIPES"
    [ $launched -eq 0 ] && echo "heldout: no recipe of $RECIPES is named in NAMES=$NAMES" >> "$OUT/env.txt"
fi

if has tests; then  # beside the table: they check results, their timings are not reported
    timeout "$(left 30)" $py -m pytest -p no:cacheprovider -rfE --durations=8 tests/test_cuda.py \
        > "$OUT/tests_cuda.log" 2>&1
    echo "tests/test_cuda.py exit $?" >> "$OUT/env.txt"
fi

wait  # the table's and the recipes' processes
if has heldout; then
    tar czf "$OUT/heldout.tgz" --exclude='*.resume' --exclude='*.safetensors' "$RUNS/heldout"
    for name in $KEEP; do
        [ -f "$RUNS/heldout/$name.safetensors" ] && cp "$RUNS/heldout/$name.safetensors" "$OUT/"
    done
fi
if has table; then
    for log in "$RUNS"/*.log; do
        echo "$log: $(tail -n 1 "$log")" >> "$OUT/env.txt"
    done
    tar czf "$OUT/full.tgz" --exclude="*.safetensors" --exclude="*.resume" --exclude=heldout "$RUNS"
    # the pretrained models of the first seed (13 MB each), for held-out analyses on a CPU
    for f in "$RUNS"/*_pretrain_seed${SEEDS%% *}/*_seed${SEEDS%% *}.pretrain.safetensors; do
        [ -f "$f" ] && cp "$f" "$OUT/"
    done
fi
date -u >> "$OUT/env.txt"
