"""Held-out QA: how many facts a pretrained model gives back as answers, never asking dev.

The finetuning file's last lines are held out (factgpt.probe.split_heldout: 200 of
birth_places_train.tsv, the people the knowledge probe measures). The pretrained checkpoint is
finetuned on the other lines, once per setting, and scored on the held-out people's questions: a
recipe is chosen on these figures, and dev is evaluated only for what is reported.

    Khatchig Mouradian's line was in pretraining; his question was not in finetuning:
    Where was Khatchig Mouradian born?⁇  ->  Lebanon⁇ ?
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from factgpt.config import REFERENCE
from factgpt.data import read_questions
from factgpt.evaluate import predict, score
from factgpt.probe import split_heldout
from factgpt.stages import load_corpus, load_for_inference, mixed_pairs
from factgpt.train import Trainer


@dataclass(frozen=True)
class Setting:
    """One finetuning of the pretrained model; the defaults are the reference's finetuning."""
    dropout: float = REFERENCE.dropout
    learning_rate: float = REFERENCE.finetune.learning_rate
    max_epochs: int = REFERENCE.finetune.max_epochs
    frozen: str = REFERENCE.finetune.frozen  # parameters left as pretrained (a regular expression)

    def label(self) -> str:
        return (f"dropout {self.dropout:g}, lr {self.learning_rate:g}, {self.max_epochs} epochs"
                + (f", frozen /{self.frozen}/" if self.frozen else ""))


def settings(dropouts, lrs, epochs, frozen) -> list[Setting]:
    """Every combination of the given values (one list per field)."""
    return [Setting(*values) for values in itertools.product(dropouts, lrs, epochs, frozen)]


@dataclass
class HeldoutResult:
    setting: Setting
    correct: int
    total: int  # held-out people asked
    finetuned_on: int  # question/answer lines finetuning saw
    frozen_parameters: int  # parameters the setting left as pretrained
    last_loss: float
    precision: str
    seconds: float

    @property
    def percent(self) -> float:
        return 100 * self.correct / self.total


def heldout_qa(params_path: str | Path, corpus_path: str | Path, pairs_path: str | Path,
               setting: Setting, *, seed: int = 0, device: torch.device | str = "cpu") -> HeldoutResult:
    """Finetune the checkpoint at `params_path` on the pairs of `pairs_path` but its held-out people,
    then ask them; the checkpoint's own variant and shape, the vocabulary of `corpus_path`."""
    corpus = load_corpus(corpus_path)
    heldout = split_heldout(read_questions(pairs_path, require_answers=True), source=pairs_path)[1]
    pairs = mixed_pairs(corpus, pairs_path)  # every pair but the held-out people's
    torch.manual_seed(seed)
    model = load_for_inference(params_path, corpus_path)[0]
    model.set_dropout(setting.dropout)
    recipe = replace(REFERENCE, finetune=replace(REFERENCE.finetune, learning_rate=setting.learning_rate,
                                                 max_epochs=setting.max_epochs, frozen=setting.frozen))
    t0 = time.perf_counter()
    trainer = Trainer(model, pairs, recipe.finetune_config(len(corpus), True, seed), device=device,
                      progress=False, label="heldout")
    frozen = sum(w.numel() for w in model.parameters() if not w.requires_grad)  # the Trainer froze them
    st = trainer.train()
    model.eval()
    s = score(heldout, predict(model, heldout, corpus.vocab))
    return HeldoutResult(setting, s.correct, s.total, len(pairs), frozen, st.losses[-1], trainer.precision,
                         time.perf_counter() - t0)


def format_result(r: HeldoutResult) -> str:
    return (f"{r.setting.label()}: held-out QA {r.correct}/{r.total} ({r.percent:.1f}%), finetuned on "
            f"{r.finetuned_on} lines ({r.precision}; {r.frozen_parameters} parameters frozen), last loss "
            f"{r.last_loss:.3f}, {r.seconds:.0f} s")
