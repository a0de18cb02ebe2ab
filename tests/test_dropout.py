"""Dropout: the fast path's masks (the keep rate, independence across positions, heads and steps,
determinism under a seed, the module's scaling, eval, p = 0 and 1), and every site of the model
dropping on every engine and layout."""

from __future__ import annotations

import math

import pytest
import torch

from factgpt import kernels
from factgpt.config import GPTConfig
from factgpt.model import GPT, Attention, Block, Dropout, keep_mask


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / math.sqrt(float((a * a).sum() * (b * b).sum())))


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.1])
def test_keep_rate_matches_within_five_sigma(keep):
    m = keep_mask((64, 8, 128, 16), keep)  # 1M elements
    n = m.numel()
    sigma = math.sqrt(keep * (1 - keep) / n)
    assert abs(m.double().mean().item() - keep) < 5 * sigma
    # the two 32-bit halves of each 64-bit draw have their own thresholds: each half keeps `keep`
    flat = m.flatten().double()
    for half in (flat[0::2], flat[1::2]):
        assert abs(half.mean().item() - keep) < 5 * sigma * math.sqrt(2)


def test_no_correlation_across_positions_heads_and_steps():
    torch.manual_seed(3)
    shape = (16, 8, 128, 128)  # (B, nh, T, T): an attention dropout mask
    m = keep_mask(shape, 0.9)
    bound = 5 / math.sqrt(m[..., 1:].numel())
    assert abs(_corr(m[..., :-1], m[..., 1:])) < bound  # neighbouring keys
    assert abs(_corr(m[..., :-2], m[..., 2:])) < bound  # two apart (the two words of one draw and the next)
    assert abs(_corr(m[:, :, :-1], m[:, :, 1:])) < bound  # neighbouring queries
    assert abs(_corr(m[:, :-1], m[:, 1:])) < bound  # neighbouring heads
    assert abs(_corr(m, keep_mask(shape, 0.9))) < bound  # the next step's mask


def test_same_seed_same_mask():
    torch.manual_seed(7)
    a = keep_mask((5, 9, 3), 0.7)
    torch.manual_seed(7)
    b = keep_mask((5, 9, 3), 0.7)
    assert torch.equal(a, b) and a.shape == (5, 9, 3)
    torch.manual_seed(8)
    assert not torch.equal(a, keep_mask((5, 9, 3), 0.7))


def test_fast_dropout_module():
    x = torch.ones(1000, 1000)
    d = Dropout(0.25)
    d.engine = "fast"
    y = d(x)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))  # survivors scaled by 1/keep
    assert abs(y.mean().item() - 1.0) < 5 * math.sqrt(0.25 * 0.75 / x.numel()) / 0.75  # expectation kept
    d.eval()
    assert torch.equal(d(x), x)
    d.train()
    d.p = 0.0
    assert torch.equal(d(x), x)
    d.p = 1.0
    assert (d(x) == 0).all()
    g = torch.ones(3, 4, requires_grad=True)
    d.p = 0.5
    out = d(g)
    out.sum().backward()
    assert torch.equal(g.grad, (out != 0).float() * 2)  # the gradient flows through the same mask


# every place the model drops out, by what it drops: the embedding, the attention weights, and the
# residual branch after attention and after the MLP, in every block (the perceiver's included)
SITES = {
    "embedding": lambda m: [m.drop],
    "attention weights": lambda m: [a.attn_drop for a in m.modules() if isinstance(a, Attention)],
    "attention output": lambda m: [a.resid_drop for a in m.modules() if isinstance(a, Attention)],
    "mlp output": lambda m: [b.mlp[3] for b in m.modules() if isinstance(b, Block)],
}


def _inputs(layout: str):
    """(model kwargs) of a small batch: plain rows, or packed rows with two documents and filler."""
    torch.manual_seed(0)
    idx = torch.randint(2, 12, (3, 16))
    if layout != "packed":
        return {"idx": idx}
    documents = torch.tensor([[0] * 6 + [1] * 8 + [-1] * 2] * 3)  # two examples and filler at the end
    positions = torch.cat([torch.arange(6), torch.arange(8), torch.zeros(2, dtype=torch.long)]).expand(3, -1)
    return {"idx": idx, "positions": positions, "documents": documents}


@pytest.mark.parametrize("engine", ["fast", "fast, torch's kernels", "reference"])
@pytest.mark.parametrize("variant, layout", [("vanilla", "grouped"), ("vanilla", "packed"), ("perceiver", "grouped")])
@pytest.mark.parametrize("site", SITES)
def test_every_dropout_site_draws_its_mask_on_every_engine(engine, variant, layout, site):
    """The model built with its dropouts at 0.5, every other site then set to 0: a training forward
    differs from the evaluation forward (the site dropped something), each of its modules alone
    too; with every site at 0 the two are equal. A site skipped on one engine or layout, or built
    without the config's rate, fails here."""
    model = GPT(GPTConfig(vocab_size=12, block_size=16, n_layer=3, n_head=2, n_embd=16, embd_pdrop=0.5,
                          resid_pdrop=0.5, attn_pdrop=0.5, perceiver=variant == "perceiver",
                          bottleneck_dim=8 if variant == "perceiver" else None))
    model.set_engine(engine.split(",")[0])
    model.set_kernels(engine == "fast" and kernels.unavailable() is None)  # the fast engine's default
    batch = _inputs(layout)
    modules = SITES[site](model)
    assert modules and all(isinstance(d, torch.nn.Dropout) for d in modules)
    everything = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    with torch.no_grad():
        want = model.eval()(**batch)[0]
        model.train()
        rate = {id(o): o.p for o in everything}  # as built: the config's rates
        assert set(rate.values()) == {0.5}
        for i, d in enumerate(modules):  # each module of the site on its own: none may be skipped
            for o in everything:
                o.p = rate[id(o)] if o is d else 0.0
            assert not torch.allclose(model(**batch)[0], want), f"{site} {i} dropped nothing"
        d.p = 0.0
        assert torch.equal(model(**batch)[0], want)  # p = 0 everywhere: training computes as evaluation
