#!/usr/bin/env bash
# finetune settings on the pretrained checkpoints of a demo run folder: held-out answers
d=$1; shift
for v in vanilla perceiver; do
  for lr in 1e-4 3e-4 1e-3; do for ep in 10 30; do for fr in "" "mlp|emb"; do
    fz=(); [ -n "$fr" ] && fz=(--finetune_frozen "$fr")
    factgpt finetune $v $d/corpus.txt --reading_params_path $d/${v}_pretrain_seed100.pretrain.safetensors --finetune_corpus_path $d/train.tsv --writing_params_path /tmp/demo/ft.safetensors --n_layer 4 --n_head 8 --n_embd 128 --bottleneck_dim 48 --dropout 0 --batch_size 32 --finetune_lr $lr --max_epochs $ep --precision bf16 "${fz[@]}" --no_tensorboard --quiet --restart > /dev/null 2>&1
    acc=$(factgpt evaluate $v $d/corpus.txt --reading_params_path /tmp/demo/ft.safetensors --eval_corpus_path $d/heldout.tsv --outputs_path /tmp/demo/ft.pred --quiet 2>/dev/null)
    echo "$v lr $lr epochs $ep frozen '$fr': $acc"
  done; done; done
done
