"""The reference optimisation: schedule, parameter groups, and both paths agreeing."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch

from factgpt.config import REFERENCE, GPTConfig, TrainConfig
from factgpt.data import CharCorruptionDataset, NameDataset
from factgpt.errors import FactgptError
from factgpt.model import GPT
from factgpt.runtime import bf16_runs
from factgpt.train import Trainer, lr_multiplier, parameter_groups, resolve_precision

from conftest import LONG, tiny_corpus, tiny_tsv


def test_lr_multiplier_reference_schedule():
    assert lr_multiplier(0, 100, 1100) == 0.0
    assert lr_multiplier(50, 100, 1100) == 0.5  # linear warm-up
    assert lr_multiplier(100, 100, 1100) == 1.0
    assert math.isclose(lr_multiplier(600, 100, 1100), 0.5)  # half-way down the cosine
    assert lr_multiplier(1100, 100, 1100) == 0.1  # the floor
    # past final_tokens the cosine turns back up: a full period later it is at 1 again
    assert lr_multiplier(1600, 100, 1100) == pytest.approx(0.5)
    assert lr_multiplier(2100, 100, 1100) == pytest.approx(1.0)


@pytest.mark.parametrize("perceiver", [False, True])
def test_parameter_groups_decay_everything_but_biases(perceiver):
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=3, n_head=2, n_embd=8,
                          perceiver=perceiver, bottleneck_dim=4 if perceiver else None))
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    plain = {names[id(p)] for p in no_decay["params"]}
    assert decayed | plain == set(names.values()) and not decayed & plain  # every parameter, once
    assert all("bias" in n for n in plain)
    assert {"pos_emb", "tok_emb.weight", "ln_f.weight", "head.weight"} <= decayed
    if perceiver:
        assert "down_block.C" in decayed  # the bare learned basis is not skipped


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_frozen_parameters_stay_as_they_were_and_the_rest_train(engine):
    """finetune_frozen: the matching parameters keep their values (no update, no weight decay) and
    leave the optimiser; the others still learn."""
    corpus = CharCorruptionDataset(tiny_corpus(), 64)
    names = NameDataset(corpus, tiny_tsv())
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=16))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tc = TrainConfig(max_epochs=2, batch_size=8, learning_rate=3e-3, final_tokens=10**9, weight_decay=0.1,
                     frozen="mlp|emb", engine=engine)
    trainer = Trainer(model, names, tc, progress=False)
    trainer.train()
    frozen = {n for n in before if "mlp" in n or "emb" in n}
    assert set(trainer.frozen) == frozen and "pos_emb" in frozen and "blocks.1.mlp.2.weight" in frozen
    assert {id(p) for g in trainer.optimizer.param_groups for p in g["params"]} == {
        id(p) for n, p in model.named_parameters() if n not in frozen}
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) == (n in frozen), n


@pytest.mark.parametrize("pattern, problem", [("mpl", "matches no parameter"), ("mlp(", "not a regular expression"),
                                              (".", "matches every parameter")])
def test_a_frozen_pattern_that_freezes_nothing_is_an_error(pattern, problem):
    corpus = CharCorruptionDataset(tiny_corpus(), 64)
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16))
    tc = TrainConfig(max_epochs=1, batch_size=8, learning_rate=3e-3, final_tokens=10**9, frozen=pattern)
    with pytest.raises(FactgptError, match=problem):
        Trainer(model, corpus, tc, progress=False)


def test_the_config_alone_decides_what_trains():
    """A model frozen by one Trainer trains whole under the next one whose config freezes nothing."""
    corpus = CharCorruptionDataset(tiny_corpus(), 64)
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16))
    tc = TrainConfig(max_epochs=1, batch_size=8, learning_rate=3e-3, final_tokens=10**9, frozen="mlp")
    assert Trainer(model, corpus, tc, progress=False).frozen
    trainer = Trainer(model, corpus, replace(tc, frozen=""), progress=False)
    assert trainer.frozen == [] and all(p.requires_grad for p in model.parameters())


def test_finetune_frozen_applies_only_after_pretraining():
    r = replace(REFERENCE, finetune=replace(REFERENCE.finetune, frozen="mlp|emb"))
    assert r.finetune_config(2938, True, 0).frozen == "mlp|emb"
    assert r.finetune_config(2938, False, 0).frozen == ""  # from scratch there is nothing to keep
    assert r.pretrain_config(2938, 0).frozen == "" and REFERENCE.finetune_config(2938, True, 0).frozen == ""


def _no_dropout(cfg: GPTConfig) -> GPTConfig:
    cfg.embd_pdrop = cfg.resid_pdrop = cfg.attn_pdrop = 0.0
    return cfg


@pytest.mark.parametrize("kernels", ["fused", "torch"])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("layout", ["grouped", "packed"])
@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_reference_and_fast_paths_take_the_same_steps(kind, layout, shuffle, kernels):
    """Without dropout, both paths see the same examples and compute the same update (fp32, within
    1e-5), whether the fast path groups examples by length or packs several to a row, in file order
    or shuffled (the reference path once ignored `shuffle`), with its fused kernels or torch's."""
    text = LONG + "\n" + tiny_corpus()
    corpus = CharCorruptionDataset(text, 64)
    ds = corpus if kind == "pretrain" else NameDataset(corpus, tiny_tsv())
    cfg = _no_dropout(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=16))
    base = GPT(cfg)
    results = {}
    for path in ("reference", "fast"):
        model = copy.deepcopy(base)
        tc = TrainConfig(max_epochs=2, batch_size=4, learning_rate=1e-3, final_tokens=10_000, engine=path,
                         precision="fp32", layout=layout, group_tokens=64, shuffle=shuffle, kernels=kernels)
        st = Trainer(model, ds, tc, progress=False).train()
        results[path] = (st, model)
    (st_r, m_r), (st_f, m_f) = results["reference"], results["fast"]
    assert st_r.tokens == st_f.tokens == 2 * len(ds) * ds.seq_len  # padding counted, as the reference
    assert st_r.useful_tokens == st_f.useful_tokens  # the same targets
    assert st_r.losses == pytest.approx(st_f.losses, rel=1e-5, abs=1e-6)
    for (n, a), (_, b) in zip(m_r.named_parameters(), m_f.named_parameters()):
        assert torch.allclose(a, b, atol=1e-5), n


def test_the_perceiver_on_packed_rows_is_refused():
    """Its latent i reads input positions <= i, so each row must start an example: packed rows were
    once trained grouped without a word while the records said packed."""
    corpus = CharCorruptionDataset(tiny_corpus(), 64)
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=16,
                          perceiver=True, bottleneck_dim=8))
    tc = TrainConfig(max_epochs=1, batch_size=4, learning_rate=1e-3, final_tokens=10_000, layout="packed")
    with pytest.raises(FactgptError, match="perceiver cannot train on packed rows"):
        Trainer(model, corpus, tc, progress=False)


def test_training_learns_a_tiny_corpus():
    corpus = CharCorruptionDataset(tiny_corpus(), 64)
    names = NameDataset(corpus, tiny_tsv())
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32))
    tc = TrainConfig(max_epochs=60, batch_size=8, learning_rate=3e-3, final_tokens=10**9)
    st = Trainer(model, names, tc, progress=False).train()
    assert st.losses[-1] < 0.3 * st.losses[0]


def _documented_lrs(cfg: TrainConfig, examples: list[int], seq_len: int) -> list[float]:
    """The rate of each step as the docs state it, written out again here: the first step at the full
    rate; after each step the counter grows by its examples x the sequence length, padding included,
    and the next step runs at the rate for that count: linear warm-up, then a cosine with a 0.1 floor
    that turns back up past final_tokens."""
    rates, tokens = [], 0
    for n in examples:
        if not rates:
            mult = 1.0
        elif tokens < cfg.warmup_tokens:
            mult = tokens / cfg.warmup_tokens
        else:
            progress = (tokens - cfg.warmup_tokens) / (cfg.final_tokens - cfg.warmup_tokens)
            mult = max(0.1, 0.5 * (1 + math.cos(math.pi * progress)))
        rates.append(cfg.learning_rate * mult)
        tokens += n * seq_len
    return rates


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_each_step_runs_at_the_documented_rate(engine, stage):
    corpus = CharCorruptionDataset(tiny_corpus(), 64)
    data = corpus if stage == "pretrain" else NameDataset(corpus, tiny_tsv())
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16))
    # batches of 4, 4 and a last one of 2 (pretraining's 10 documents); warm-up, cosine and its rise
    tc = TrainConfig(max_epochs=4, batch_size=4, learning_rate=1e-3, warmup_tokens=300, final_tokens=1200,
                     engine=engine, precision="fp32")
    trainer = Trainer(model, data, tc, progress=False)
    used, step = [], trainer.optimizer.step

    def recording_step(*args, **kwargs):
        used.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    examples, before = [], [0]
    trainer.add_callback("on_step_end", lambda t: (examples.append(t.state.examples - before[0]),
                                                   before.__setitem__(0, t.state.examples)))
    trainer.train()
    assert examples[:3] == ([4, 4, 2] if stage == "pretrain" else [4, 4, 4])  # finetuning: 8 pairs
    assert used == pytest.approx(_documented_lrs(tc, examples, data.seq_len), rel=1e-12)


@pytest.mark.skipif(not bf16_runs(torch.device("cpu")), reason="this CPU runs bf16 as fp32 (no AVX512)")
@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_bf16_runs_its_matmuls_in_bf16_and_learns(engine):
    corpus = CharCorruptionDataset(tiny_corpus(), 64)
    names = NameDataset(corpus, tiny_tsv())
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32))
    tc = TrainConfig(max_epochs=30, batch_size=8, learning_rate=3e-3, final_tokens=10**9, precision="bf16",
                     engine=engine)
    trainer = Trainer(model, names, tc, progress=False)
    assert trainer.precision == "bf16"  # else this would test fp32 again
    dtypes = set()  # what the linear layers compute in during training
    hooks = [m.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    st = trainer.train()
    for h in hooks:
        h.remove()
    assert dtypes == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay fp32 (autocast)
    assert st.losses[-1] < 0.5 * st.losses[0]


def test_bf16_where_unsupported_runs_and_says_fp32(monkeypatch):
    # a CPU without AVX512: the run must not say bf16 of a computation in fp32
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    cpu = torch.device("cpu")
    assert resolve_precision("bf16", cpu) == "fp32" and resolve_precision("fp32", cpu) == "fp32"
    corpus = CharCorruptionDataset(tiny_corpus(), 64)
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16))
    tc = TrainConfig(max_epochs=1, batch_size=8, learning_rate=1e-3, final_tokens=10**9, precision="bf16")
    trainer = Trainer(model, NameDataset(corpus, tiny_tsv()), tc, progress=False)
    assert trainer.precision == "fp32"


def test_compile_falls_back_to_eager_when_compilation_fails(monkeypatch):
    import factgpt.runtime as runtime_mod

    def broken(net):
        def fail(**kwargs):
            raise RuntimeError("no C compiler found")
        return fail
    monkeypatch.setattr(runtime_mod, "_compiled", broken)
    corpus = CharCorruptionDataset(tiny_corpus(), 64)
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=1, n_head=1, n_embd=8))
    tr = Trainer(model, corpus, TrainConfig(max_epochs=2, batch_size=4, learning_rate=1e-3, final_tokens=10**6,
                                            compile=True), progress=False)
    tr.state.step, tr.state.epoch = 3, 1  # a resumed run: its first call may still fail to compile
    st = tr.train()
    assert st.step == 6 and tr.compile_fallback == "RuntimeError: no C compiler found"


def test_callbacks_fire_in_order_and_stop_ends_training():
    """on_checkpoint every N steps before on_step_end, on_epoch_end after each epoch; stop() ends
    training after the current step."""
    corpus = CharCorruptionDataset(tiny_corpus(), 64)  # 9 documents: 3 steps an epoch of batch 4
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=1, n_head=1, n_embd=8))
    tr = Trainer(model, corpus, TrainConfig(max_epochs=3, batch_size=4, learning_rate=1e-3, final_tokens=10**6),
                 progress=False, checkpoint_every=2)
    seen = []
    for event in ("on_step_end", "on_epoch_end", "on_checkpoint"):
        tr.add_callback(event, lambda t, e=event: seen.append((e, t.state.step)))
    tr.add_callback("on_step_end", lambda t: t.stop() if t.state.step == 5 else None)
    with pytest.raises(ValueError):
        tr.add_callback("on_batch_end", print)
    st = tr.train()
    assert (st.step, st.epoch, st.batch_in_epoch) == (5, 1, 2)
    assert seen == [("on_step_end", 1), ("on_checkpoint", 2), ("on_step_end", 2), ("on_step_end", 3),
                    ("on_epoch_end", 3), ("on_checkpoint", 4), ("on_step_end", 4), ("on_step_end", 5)]


@pytest.mark.parametrize("engine,layout", [("fast", "grouped"), ("fast", "packed"), ("reference", "grouped")])
def test_late_dropout_trains_without_dropout_until_its_epoch(engine, layout):
    """dropout_start_epoch: every dropout at 0 for the first epochs, then the model's own rate;
    before it starts, the run is step for step a run of the same model without dropout."""
    corpus = CharCorruptionDataset(tiny_corpus(), 64)  # 9 documents: 3 steps an epoch of batch 4

    def run(dropout: float, start: int) -> tuple[list[float], list[float], GPT]:
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16,
                              embd_pdrop=dropout, resid_pdrop=dropout, attn_pdrop=dropout))
        tc = TrainConfig(max_epochs=3, batch_size=4, learning_rate=1e-3, final_tokens=10**6, engine=engine,
                         precision="fp32", dropout_start_epoch=start, layout=layout)
        tr = Trainer(model, copy.deepcopy(corpus), tc, progress=False)
        rates = []
        tr.add_callback("on_step_end", lambda t: rates.append(t.raw_model.blocks[0].attn.attn_drop.p))
        return tr.train().losses, rates, model

    late, rates, model = run(0.3, 2)
    assert rates == [0.0] * 6 + [0.3] * 3  # two epochs of 3 steps without, then the model's own
    assert all(m.p == 0.3 for m in model.modules() if isinstance(m, torch.nn.Dropout))  # left as it was
    none = run(0.0, 0)[0]
    assert late[:6] == none[:6] and late[6:] != none[6:]
    assert run(0.3, 0)[0][:6] != none[:6]  # the reference: dropout from the first step


def test_late_dropout_is_restored_however_training_ends():
    corpus = CharCorruptionDataset(tiny_corpus(), 64)
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16,
                          embd_pdrop=0.2, resid_pdrop=0.2, attn_pdrop=0.2))
    tr = Trainer(model, corpus, TrainConfig(max_epochs=3, batch_size=4, learning_rate=1e-3, final_tokens=10**6,
                                            dropout_start_epoch=2), progress=False)

    def crash(t):
        raise KeyboardInterrupt  # mid-run, while every dropout is at 0

    tr.add_callback("on_step_end", crash)
    with pytest.raises(KeyboardInterrupt):
        tr.train()
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.2}


def test_late_dropout_scales_with_a_shorter_perceiver_pretraining():
    r = replace(REFERENCE, pretrain=replace(REFERENCE.pretrain, max_epochs=100, perceiver_epochs=50,
                                            dropout_start_epoch=40))
    assert r.pretrain_config(10, 0).dropout_start_epoch == 40
    assert r.pretrain_config(10, 0, perceiver=True).dropout_start_epoch == 20
