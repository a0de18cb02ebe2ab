#!/usr/bin/env bash
# One pretraining recipe candidate on 2 CPU cores, judged on the 200 people held out
# from birth_places_train.tsv only (never dev):
#   1. `factgpt pretrain` with `fast`'s settings (the reference recipe, shuffled, one cosine over the
#      run) and the flags given (not --mix_pairs), the knowledge probe every 25 epochs, resume points
#      every 200 steps (rerunning the same command continues an interrupted run, and skips a finished one);
#   2. held-out QA after finetuning on the other 1,800 lines, once finetuning everything (the
#      reference) and once with the MLPs and embeddings frozen (`fast`'s finetuning);
#   3. the forms of the fact the pretrained model gives back (line, name only, cloze);
#   4. the probe curve against training minutes.
# Everything goes to $RUNS/NAME/ (runs/NAME by default): pretrain.safetensors, pretrain.log,
# heldout_qa.txt, probe_forms.txt, probe_curve.txt.
#
# usage: [DATA=../shared/data] [THREADS=2] [RUNS=runs] bash experiments/cpu_candidate.sh NAME EPOCHS [pretrain flags...]
# e.g.   bash experiments/cpu_candidate.sh d05 380 --dropout 0.05
# Run it from a fixed commit in a worktree of its own, with `nice`, alone on the cores: `fast`'s
# 380 epochs take about 100 minutes on 2 AVX512-BF16 cores, 5-6 hours on 2 AVX2-only ones
# (records/2026-11-29_late100 is a run of it).
set -euo pipefail
name=$1; epochs=$2; shift 2
for flag in "$@"; do
  if [ "$flag" = --mix_pairs ]; then  # the schedule below counts documents only
    echo "cpu_candidate.sh: --mix_pairs is not for this script (its cosine would end early); use reproduce --budget mixed" >&2
    exit 2
  fi
done
data=${DATA:-../shared/data}
threads=${THREADS:-2}
out=${RUNS:-runs}/$name
mkdir -p "$out"
# one cosine over the run, `fast`'s schedule: the documents as the pretraining counts them, times the epochs
final=$(python -c "import sys
from factgpt.config import BLOCK_SIZE
from factgpt.stages import load_corpus
print(int(sys.argv[2]) * len(load_corpus(sys.argv[1])) * BLOCK_SIZE)" "$data/wiki.txt" "$epochs")
ck=$out/pretrain.safetensors
if [ -f "$ck" ] && [ ! -f "$ck.resume" ]; then  # finished earlier (the resume point goes at the end; --save_every
  # writes $ck mid-run): only the measurements below run again
  echo "cpu_candidate.sh: $ck exists; pretraining skipped" >&2
else
  factgpt pretrain vanilla "$data/wiki.txt" --writing_params_path "$ck" --max_epochs "$epochs" \
    --final_tokens "$final" --shuffle --probe_every 25 --finetune_corpus_path "$data/birth_places_train.tsv" \
    --threads "$threads" --no_tensorboard --quiet --resume "$@" 2>&1 | tee -a "$out/pretrain.log"
fi
factgpt heldout --reading_params_path "$ck" --pretrain_corpus_path "$data/wiki.txt" \
  --finetune_corpus_path "$data/birth_places_train.tsv" --dropouts 0.1 --frozen '' 'mlp|emb' \
  --threads "$threads" 2>&1 | tee "$out/heldout_qa.txt"
python experiments/probe_forms.py --data_dir "$data" --threads "$threads" "$ck" 2>&1 | tee "$out/probe_forms.txt"
python experiments/probe_curve.py "$ck" 2>&1 | tee "$out/probe_curve.txt"
