#!/usr/bin/env bash
# finetuning settings on the seed-100 world's pretrained checkpoints (tuning only): held-out answers
echo 19 > /proc/self/autogroup
. /work/main/.venv/bin/activate
d=/tmp/demo/runs/final100_s100
for v in perceiver vanilla; do
  for lr in 3e-4 1e-3; do for ep in 30 75 150; do for fr in "mlp|emb" ""; do
    fz=(); [ -n "$fr" ] && fz=(--finetune_frozen "$fr")
    factgpt finetune $v $d/corpus.txt --reading_params_path $d/${v}_pretrain_seed100.pretrain.safetensors --finetune_corpus_path $d/train.tsv --writing_params_path /tmp/demo/ft2/ft.safetensors --n_layer 4 --n_head 8 --n_embd 128 --bottleneck_dim 48 --dropout 0 --batch_size 32 --finetune_lr $lr --max_epochs $ep --precision bf16 "${fz[@]}" --no_tensorboard --quiet --restart --threads 1 > /dev/null 2>&1
    acc=$(factgpt evaluate $v $d/corpus.txt --reading_params_path /tmp/demo/ft2/ft.safetensors --eval_corpus_path $d/heldout.tsv --outputs_path /tmp/demo/ft2/ft.pred --quiet --threads 1 2>&1)
    echo "$v lr $lr epochs $ep frozen '$fr': $acc"
  done; done; done
done
