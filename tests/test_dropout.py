"""The fast path's dropout masks: the keep rate, independence across positions, heads and steps,
determinism under a seed, and the module's behaviour (scaling, eval, p = 0 and 1)."""

from __future__ import annotations

import math

import pytest
import torch

from factgpt.model import Dropout, keep_mask


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
