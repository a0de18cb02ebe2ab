"""Every named recipe builds, for every stage, exactly the TrainConfig and GPTConfig it built when
the fixture was written (tests/data/recipes_pinned.json, made at commit b0be7d7): a refactoring of
the recipe, the knobs or the command line must not change what any recipe trains. A recipe changed
on purpose rewrites its own entry in the same commit, which then says why."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from factgpt.config import json_roundtrip
from factgpt.recipes import BUDGETS, DEMO, DEMO_TINY

PINNED = json.loads((Path(__file__).parent / "data" / "recipes_pinned.json").read_text(encoding="utf-8"))
N_DOCS, VOCAB, PAIRS = 2938, 256, 1800  # wiki.txt's documents, a vocabulary, the pairs `mixed` mixes in


def configs(recipe) -> dict:
    """The recipe's configs under the fixture's keys."""
    out = {}
    for perceiver in (False, True):
        v = "perceiver" if perceiver else "vanilla"
        out[f"{v}.model"] = asdict(recipe.model_config(VOCAB, perceiver))
        for seed in (0, 3):
            pairs = PAIRS if recipe.pretrain.mix_pairs else 0
            out[f"{v}.pretrain.seed{seed}"] = asdict(recipe.pretrain_config(N_DOCS, seed, perceiver, pairs))
            for pretrained in (False, True):
                key = f"{v}.finetune.{'pretrained' if pretrained else 'scratch'}.seed{seed}"
                out[key] = asdict(recipe.finetune_config(N_DOCS, pretrained, seed))
    out["corruption"] = asdict(recipe.pretrain.corruption)
    return json_roundtrip(out)


def test_every_named_recipe_is_pinned():
    assert sorted(PINNED) == sorted([*BUDGETS, DEMO.name, DEMO_TINY.name])


@pytest.mark.parametrize("recipe", [*BUDGETS.values(), DEMO, DEMO_TINY], ids=lambda r: r.name)
def test_recipe_builds_its_pinned_configs(recipe):
    assert configs(recipe) == PINNED[recipe.name]
