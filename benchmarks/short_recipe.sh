#!/usr/bin/env bash
# Pretrain -> finetune -> evaluate on the real data with a shortened pretraining budget.
# The reference pretrains 650 epochs with a cosine that reaches its floor at 200 epochs (then
# rises and falls again); here the cosine is compressed to end with the run.
# usage: [COMMON="--threads 1"] [TRAIN="--precision bf16"] benchmarks/short_recipe.sh VARIANT EPOCHS OUTDIR
#        [pretraining flags...]
# The pretraining flags go to `factgpt pretrain` alone; TRAIN goes to pretrain and finetune (e.g.
# --precision, --dropout: finetuning runs at its own dropout, 0.1 unless given); COMMON goes to all
# three (e.g. --threads, --device). evaluate refuses training flags and, like finetune, takes the
# model's shape from the checkpoint.
set -euo pipefail
variant=$1; epochs=$2; out=$3; shift 3
read -r -a common <<< "${COMMON:-}"
read -r -a train <<< "${TRAIN:-}"
data=${DATA:-../shared/data}
mkdir -p "$out"
docs=$(python -c "print(len(open('$data/wiki.txt', encoding='utf-8').read().split('\n')))")
final=$((epochs * docs * 128))
start=$(date +%s)
factgpt pretrain "$variant" "$data/wiki.txt" --max_epochs "$epochs" --final_tokens "$final" \
  --writing_params_path "$out/$variant.pretrain.safetensors" --save_every 10 \
  --tb_dir "$out/expt" "${common[@]}" "${train[@]}" "$@"
mid=$(date +%s)
factgpt finetune "$variant" "$data/wiki.txt" --reading_params_path "$out/$variant.pretrain.safetensors" \
  --finetune_corpus_path "$data/birth_places_train.tsv" \
  --writing_params_path "$out/$variant.finetune.safetensors" --tb_dir "$out/expt" "${common[@]}" "${train[@]}"
factgpt evaluate "$variant" "$data/wiki.txt" --reading_params_path "$out/$variant.finetune.safetensors" \
  --eval_corpus_path "$data/birth_dev.tsv" --outputs_path "$out/$variant.pretrain.dev.predictions" "${common[@]}"
end=$(date +%s)
echo "wall: pretrain $((mid - start)) s, finetune+evaluate $((end - mid)) s, total $((end - start)) s"
