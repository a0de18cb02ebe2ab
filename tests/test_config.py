"""The recipe: REFERENCE is the one place the reference's values are written; every budget builds
valid configs from it, and the command line's defaults are exactly REFERENCE's."""

from __future__ import annotations

from dataclasses import fields

import pytest

from factgpt.checkpoint import save_checkpoint
from factgpt.cli import build_parser, parse
from factgpt.config import (
    BLOCK_SIZE,
    PERCEIVER_M,
    REFERENCE,
    Finetuning,
    GPTConfig,
    Pretraining,
    Recipe,
    TrainConfig,
    final_tokens_for,
)
from factgpt.errors import FactgptError
from factgpt.knobs import recipe_of, train_config_of
from factgpt.model import GPT
from factgpt.recipes import BUDGET_ABOUT, BUDGETS, DEMO, DEMO_TINY
from factgpt.stages import ModelSpec, load_corpus, load_model

N_DOCS, VOCAB = 2938, 256


@pytest.mark.parametrize("recipe", [*BUDGETS.values(), DEMO, DEMO_TINY], ids=lambda r: r.name)
def test_every_budget_builds_valid_configs(recipe: Recipe):
    for perceiver in (False, True):
        m = recipe.model_config(VOCAB, perceiver)  # GPTConfig checks itself
        assert isinstance(m, GPTConfig) and m.perceiver == perceiver and m.block_size == BLOCK_SIZE
        assert m.bottleneck_dim == (recipe.bottleneck_dim if perceiver else None)
        assert m.embd_pdrop == m.resid_pdrop == m.attn_pdrop == recipe.dropout
        p, f = recipe.pretrain, recipe.finetune
        pre = recipe.pretrain_config(N_DOCS, 3, perceiver)
        assert pre.max_epochs == (p.perceiver_epochs or p.max_epochs if perceiver else p.max_epochs)
        assert (pre.batch_size, pre.learning_rate, pre.seed, pre.precision) == (
            p.batch_size, p.learning_rate, 3, recipe.precision)
        # the cosine's floor after final_epochs epochs' tokens, scaled with the epochs run
        assert pre.final_tokens == pytest.approx(p.final_epochs * pre.max_epochs / p.max_epochs
                                                 * N_DOCS * BLOCK_SIZE, abs=1)
        for pretrained in (False, True):
            fin = recipe.finetune_config(N_DOCS, pretrained, 3)
            assert fin.max_epochs == (f.max_epochs if pretrained else f.max_epochs_scratch)
            assert fin.final_tokens == final_tokens_for(N_DOCS) and fin.batch_size == f.batch_size
        for t in (pre, fin):
            assert isinstance(t, TrainConfig) and min(t.max_epochs, t.batch_size, t.final_tokens) > 0
            assert t.learning_rate > 0 and t.weight_decay >= 0 and t.precision in ("auto", "fp32", "bf16")
    assert {**BUDGETS, "demo": DEMO, "demo-tiny": DEMO_TINY}[recipe.name] is recipe  # filed under its own name


def test_every_budget_has_its_line_in_the_help():
    assert BUDGET_ABOUT.keys() == BUDGETS.keys()
    reproduce = build_parser()._subparsers._group_actions[0].choices["reproduce"]
    (budget,) = [a for a in reproduce._actions if a.dest == "budget"]
    assert all(f"{name}: {about}" in budget.help for name, about in BUDGET_ABOUT.items())


def test_reference_is_the_reference_recipe():
    assert BUDGETS["full"] is REFERENCE and REFERENCE.bottleneck_dim == PERCEIVER_M
    r = REFERENCE
    assert (r.pretrain.max_epochs, r.pretrain.batch_size, r.pretrain.learning_rate) == (650, 128, 6e-3)
    f = r.finetune
    assert (f.max_epochs, f.max_epochs_scratch, f.batch_size, f.learning_rate) == (10, 75, 256, 6e-4)
    assert r.pretrain_config(N_DOCS, 0).final_tokens == final_tokens_for(N_DOCS)  # 200 epochs' tokens
    # the model's defaults are GPTConfig's, so the reference model is GPTConfig's default model
    assert r.model_config(VOCAB, False) == GPTConfig(vocab_size=VOCAB)
    assert {f.name for f in fields(Pretraining)} >= {"weight_decay", "shuffle", "corruption", "mix_pairs",
                                                      "probe_every"}


def test_a_stage_recipe_names_its_fields_as_the_trainconfig_it_becomes():
    """One name per concept from recipe to TrainConfig: a stage's field and the TrainConfig field it sets
    are spelt alike (the recipe-only ones aside)."""
    train = {f.name for f in fields(TrainConfig)}
    recipe_only = {"final_epochs", "perceiver_epochs", "corruption", "mix_pairs", "probe_every", "max_epochs_scratch"}
    for stage in (Pretraining, Finetuning):
        assert {f.name for f in fields(stage)} - recipe_only <= train, stage


@pytest.mark.parametrize("variant", ["vanilla", "perceiver"])
def test_command_line_defaults_are_the_reference(variant):
    perceiver = variant == "perceiver"
    args = parse(["pretrain", variant, "wiki.txt"])
    assert recipe_of(args) == REFERENCE
    assert train_config_of(args, recipe_of(args), N_DOCS) == REFERENCE.pretrain_config(N_DOCS, 0, perceiver)
    assert recipe_of(args).model_config(VOCAB, perceiver) == REFERENCE.model_config(VOCAB, perceiver)
    for reading, pretrained in ((["--reading_params_path", "p"], True), ([], False)):
        args = parse(["finetune", variant, "wiki.txt", *reading])
        assert recipe_of(args) == REFERENCE
        assert train_config_of(args, recipe_of(args), N_DOCS) == REFERENCE.finetune_config(N_DOCS, pretrained, 0)
    assert recipe_of(parse(["evaluate", variant, "wiki.txt"])) == REFERENCE


def test_flags_replace_the_fields_of_their_stage():
    flags = ["--max_epochs", "3", "--batch_size", "4", "--weight_decay", "0", "--bottleneck_dim", "8",
             "--pretrain_lr", "1e-3", "--min_truncation", "64", "--precision", "fp32", "--seed", "2"]
    args = parse(["pretrain", "perceiver", "wiki.txt", *flags, "--shuffle", "--final_tokens", "99"])
    r = recipe_of(args)
    p = r.pretrain
    assert (p.max_epochs, p.batch_size, p.weight_decay, r.bottleneck_dim, p.learning_rate) == (3, 4, 0, 8, 1e-3)
    assert p.corruption.min_truncation == 64 and r.finetune == REFERENCE.finetune
    t = train_config_of(args, r, N_DOCS)
    assert (t.max_epochs, t.batch_size, t.weight_decay, t.seed, t.precision) == (3, 4, 0, 2, "fp32")
    assert t.shuffle and t.final_tokens == 99
    assert t.group_tokens == TrainConfig.group_tokens
    grouped = train_config_of(parse(["pretrain", "vanilla", "wiki.txt", "--group_tokens", "16384"]), REFERENCE, N_DOCS)
    assert (grouped.layout, grouped.group_tokens) == ("grouped", 16384)  # groups asked for: not packed
    finetune_flags = [f for f in flags if f not in ("--pretrain_lr", "1e-3", "--min_truncation", "64")]
    r = recipe_of(parse(["finetune", "vanilla", "wiki.txt", *finetune_flags]))
    f = r.finetune
    assert (f.max_epochs, f.max_epochs_scratch, f.batch_size, f.weight_decay) == (3, 3, 4, 0)
    assert r.pretrain == REFERENCE.pretrain


def test_a_checkpoints_shape_is_checked_only_when_asked(tiny_files, tmp_path):
    corpus = load_corpus(tiny_files["corpus"])
    small = REFERENCE.model_config(corpus.vocab_size, True)
    small = GPTConfig(**{**small.identity(), "n_layer": 2, "n_head": 2, "n_embd": 16, "bottleneck_dim": 8})
    path = tmp_path / "m8.safetensors"
    save_checkpoint(path, GPT(small), corpus.vocab)
    model, _ = load_model(path, ModelSpec("perceiver", REFERENCE, pinned=()), corpus, tiny_files["corpus"])
    assert model.config.bottleneck_dim == 8 and model.config.n_layer == 2  # no shape flags: the checkpoint's
    for pinned, problem in ((("bottleneck_dim",), f"bottleneck_dim 8, not {PERCEIVER_M}"),
                            (("n_embd",), f"n_embd 16, not {REFERENCE.n_embd}")):
        with pytest.raises(FactgptError, match=problem):
            load_model(path, ModelSpec("perceiver", REFERENCE, pinned=pinned), corpus, tiny_files["corpus"])


def test_vanilla_pretraining_packs_and_the_rest_is_grouped():
    """Packed rows for vanilla pretraining (measured faster, docs/speed.md); the perceiver
    cannot pack and finetuning runs faster grouped."""
    assert REFERENCE.pretrain_config(N_DOCS, 0).layout == "packed"
    assert REFERENCE.pretrain_config(N_DOCS, 0, perceiver=True).layout == "grouped"
    assert REFERENCE.finetune_config(N_DOCS, True, 0).layout == "grouped"
    assert train_config_of(parse(["pretrain", "vanilla", "wiki.txt"]), REFERENCE, N_DOCS).layout == "packed"
    assert train_config_of(parse(["finetune", "vanilla", "wiki.txt"]), REFERENCE, N_DOCS).layout == "grouped"
