"""Held-out QA of a pretrained checkpoint (never dev): finetune on the first training lines, score the
last 200 (the people the knowledge probe measures), once per finetuning setting.

    python benchmarks/heldout_finetune.py --data-dir ../shared/data \
        --params fast300/vanilla_pretrain_seed0.pretrain.safetensors

The finetuning is the reference's (10 epochs, lr 6e-4, batch 256) unless --lrs or --epochs say
otherwise; every combination of dropout, learning rate, epochs and frozen parameters runs once,
which tells whether the finetuning's settings decide extraction. `--freeze mlp 'mlp|emb'` finetunes
once with the MLPs frozen and once with the MLPs and both embeddings frozen: a frozen parameter keeps
what pretraining stored, so finetuning can only learn to route the question to it.
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import replace
from pathlib import Path

import torch

from factgpt.checkpoint import load_checkpoint
from factgpt.config import REFERENCE
from factgpt.data import read_questions
from factgpt.evaluate import predict, score
from factgpt.probe import split_heldout
from factgpt.stages import load_corpus, mixed_pairs
from factgpt.train import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--params", required=True, help="a pretrained vanilla checkpoint")
    ap.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.1])
    ap.add_argument("--lrs", type=float, nargs="+", default=[REFERENCE.finetune_lr])
    ap.add_argument("--epochs", type=int, nargs="+", default=[REFERENCE.finetune_epochs])
    ap.add_argument("--freeze", nargs="+", default=[""], metavar="REGEX",
                    help="per run, a regular expression of parameter names that finetuning leaves as they are "
                    "(the recipe's finetune_frozen, e.g. 'mlp', 'mlp|emb'; default: none)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = Path(args.data_dir)
    corpus = load_corpus(d / "wiki.txt")
    train_path = d / "birth_places_train.tsv"
    heldout = split_heldout(read_questions(train_path, require_answers=True))[1]
    pairs = mixed_pairs(corpus, train_path)  # every training pair but the held-out people's
    for p, lr, epochs, frozen in itertools.product(args.dropouts, args.lrs, args.epochs, args.freeze):
        torch.manual_seed(args.seed)
        model = load_checkpoint(args.params).build_model()
        model.set_dropout(p)
        t0 = time.perf_counter()
        recipe = replace(REFERENCE, finetune_lr=lr, finetune_epochs=epochs, finetune_frozen=frozen)
        trainer = Trainer(model, pairs, recipe.finetune_config(len(corpus), True, args.seed),
                          device=args.device, progress=False)
        n_frozen = sum(w.numel() for w in model.parameters() if not w.requires_grad)  # the Trainer froze them
        st = trainer.train()
        model.eval()
        s = score(heldout, predict(model, heldout, corpus.vocab))
        print(f"finetuning dropout {p:g}, lr {lr:g}, {epochs} epochs"
              + (f", frozen /{frozen}/ ({n_frozen} parameters)" if frozen else "") + ": "
              f"held-out QA {s.correct}/{s.total} ({100 * s.correct / s.total:.1f}%), "
              f"finetuned on {len(pairs)} lines ({trainer.precision}, {args.device}), last loss {st.losses[-1]:.3f}, "
              f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
