"""The fused CPU kernels (factgpt.kernels): attention equal to the explicit path's over packed and
plain rows, its dropout and the dropout kernel drawn as documented (Philox, written out again here),
with the statistics and the gradients that implies; and training that falls back to torch's
operations, saying why, where the kernels cannot be built."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from factgpt import kernels
from factgpt.config import GPTConfig, TrainConfig
from factgpt.data import CharCorruptionDataset
from factgpt.model import GPT
from factgpt.train import Trainer

from conftest import tiny_corpus

pytestmark = pytest.mark.skipif(kernels.unavailable() is not None, reason=f"no fused kernels: {kernels.unavailable()}")

M32 = np.uint64(0xFFFFFFFF)


def philox(seed: int, blocks: np.ndarray) -> np.ndarray:
    """Philox4x32-10 (Salmon et al. 2011): the 4 words (4, n) of counters `blocks` under a 64-bit key."""
    seed &= 2**64 - 1
    x0, x1 = blocks.astype(np.uint64) & M32, blocks.astype(np.uint64) >> np.uint64(32)
    x2, x3 = np.zeros_like(x0), np.zeros_like(x0)
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)
    for _ in range(10):
        p0, p1 = np.uint64(0xD2511F53) * x0, np.uint64(0xCD9E8D57) * x2
        x0, x1, x2, x3 = (p1 >> np.uint64(32)) ^ x1 ^ k0, p1 & M32, (p0 >> np.uint64(32)) ^ x3 ^ k1, p0 & M32
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & M32, (k1 + np.uint64(0xBB67AE85)) & M32
    return np.stack([x0, x1, x2, x3])


def kept(seed: int, stream, chunks: int, element: np.ndarray, p: float) -> np.ndarray:
    """Whether each element of a stream is kept, as fused.cpp's Dropping documents it: element e of
    stream s is word (e % 64) // 16 of block 16 (s chunks + e // 64) + e % 16, kept below round(keep 2^32)."""
    e = element.astype(np.uint64)
    block = np.uint64(16) * (np.uint64(stream) * np.uint64(chunks) + e // np.uint64(64)) + e % np.uint64(16)
    words = philox(seed, block)[((e % np.uint64(64)) // np.uint64(16)).astype(np.int64), np.arange(e.size)]
    return words < round((1 - p) * 2**32)


def test_philox_gives_the_published_answer():
    assert [int(w) for w in philox(0, np.array([0]))[:, 0]] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


def _packed(R: int, T: int) -> torch.Tensor:
    """Document ids of packed rows: several examples, a one-example row, one-position examples and
    filler (-1) at the end of a row."""
    rows = [[0] * 20 + [1] * 30 + [-1] * (T - 50), [0] * T, [0] + [1] * (T - 1), [0] * 5 + [1] + [2] * (T - 6)]
    return torch.tensor(rows[:R])


def explicit(q, k, v, documents, scale, keep=None, p=0.0):
    """The explicit path (the reference's arithmetic) on (R, T, H, D) inputs, with a given mask."""
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
    allowed = torch.ones(qh.shape[2], kh.shape[2], dtype=torch.bool).tril()
    if documents is not None:
        allowed = ((documents[:, :, None] == documents[:, None, :]) & allowed)[:, None]
    att = ((qh @ kh.transpose(-2, -1)) * scale).masked_fill(~allowed, -1e10).softmax(-1)
    if keep is not None:
        att = att * keep / (1 - p)
    return (att @ vh).transpose(1, 2)


def _attention_mask(seed: int, documents, R: int, H: int, T: int, p: float) -> torch.Tensor:
    """The fused attention's keep mask (R, H, T, T): query i's stream counts its keys from its segment's first."""
    keep = torch.zeros(R, H, T, T, dtype=torch.bool)
    chunks = (T + 63) // 64
    for r in range(R):
        starts = [0] * T
        for i in range(1, T):
            starts[i] = starts[i - 1] if documents[r, i] == documents[r, i - 1] else i
        for h in range(H):
            for i in range(T):
                n = i - starts[i] + 1
                keep[r, h, i, starts[i]:i + 1] = torch.from_numpy(kept(seed, (r * H + h) * T + i, chunks,
                                                                       np.arange(n), p))
    return keep


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> bool:
    """Equal within `rel` of the larger magnitude (a gradient of zeros must come out as zeros)."""
    return (a - b).abs().max().item() <= rel * max(b.abs().max().item(), 1e-6)


def _grads(out, inputs, g):
    return torch.autograd.grad(out, inputs, g)


@pytest.mark.parametrize("head", [8, 16, 32, 64])
@pytest.mark.parametrize("packed", [True, False])
def test_attention_without_dropout_is_the_explicit_path(packed, head):
    torch.manual_seed(0)
    R, T, H = 4, 70, 3
    docs = _packed(R, T) if packed else None
    q, k, v = (torch.randn(R, T, H, head, dtype=torch.float64).float().requires_grad_() for _ in range(3))
    scale = 1 / math.sqrt(head)
    got, want = kernels.attention(q, k, v, docs, scale), explicit(q, k, v, docs, scale)
    g = torch.randn_like(got)
    for a, b in zip((got, *_grads(got, (q, k, v), g)), (want, *_grads(want, (q, k, v), g))):
        assert close(a, b)


@pytest.mark.parametrize("tq, tk", [(16, 40), (40, 16), (1, 1)])
def test_cross_attention_is_the_explicit_path(tq, tk):
    """The perceiver's cross-attention: query i sees keys 0..i (top-left causal), Tq and Tk differing."""
    torch.manual_seed(1)
    q = torch.randn(3, tq, 4, 16, requires_grad=True)
    k, v = (torch.randn(3, tk, 4, 16, requires_grad=True) for _ in range(2))
    got, want = kernels.attention(q, k, v, None, 0.3), explicit(q, k, v, None, 0.3)
    g = torch.randn_like(got)
    for a, b in zip((got, *_grads(got, (q, k, v), g)), (want, *_grads(want, (q, k, v), g))):
        assert close(a, b)


def test_attention_dropout_and_its_gradient_are_the_ones_its_mask_implies(monkeypatch):
    """The weights dropped are the documented Philox draws, and the gradient is the explicit path's
    given that mask: the backward regenerated it."""
    seed = 123456789123456789
    monkeypatch.setattr(kernels, "_seed", lambda: seed)
    torch.manual_seed(2)
    R, T, H, D, p = 4, 70, 3, 16, 0.3
    docs = _packed(R, T)
    q, k, v = (torch.randn(R, T, H, D, requires_grad=True) for _ in range(3))
    got = kernels.attention(q, k, v, docs, 0.25, p)
    want = explicit(q, k, v, docs, 0.25, _attention_mask(seed, docs, R, H, T, p), p)
    g = torch.randn_like(got)
    for a, b in zip((got, *_grads(got, (q, k, v), g)), (want, *_grads(want, (q, k, v), g))):
        assert close(a, b)


def test_the_dropout_kernel_draws_the_documented_mask_and_reuses_it_backward(monkeypatch):
    seed = -7  # a negative int64 key is its 64-bit pattern
    monkeypatch.setattr(kernels, "_seed", lambda: seed)
    x = torch.randn(333, 37, requires_grad=True)
    y = kernels.dropout(x, 0.1)
    keep = torch.from_numpy(kept(seed, 0, 0, np.arange(x.numel()), 0.1)).view(x.shape)
    assert torch.equal(y, torch.where(keep, x * torch.tensor(1 / 0.9), 0.0))
    (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert torch.equal(g, torch.where(keep, torch.tensor(1 / 0.9), 0.0))  # the same mask, regenerated
    xb = x.detach().bfloat16()
    assert torch.equal(kernels.dropout(xb, 0.1), torch.where(keep, (xb.float() * (1 / 0.9)).bfloat16(), 0))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_the_keep_rate_is_within_five_sigma_over_a_million_draws(p):
    torch.manual_seed(3)
    y = kernels.dropout(torch.ones(1024, 1024), p)  # 2^20 draws
    keep, n = 1 - p, y.numel()
    assert abs((y != 0).double().mean().item() - keep) < 5 * math.sqrt(keep * (1 - keep) / n)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / math.sqrt(float((a * a).sum() * (b * b).sum())))


def test_attention_masks_keep_their_rate_uncorrelated_across_keys_queries_heads_rows_and_calls():
    """One call is one layer's attention in one step. With equal scores and one-hot values the output
    is the weights themselves, so the mask reads off it: over a million live weights it keeps 1 - p
    within five sigma; neighbouring keys, queries, heads and rows, and the next call (another layer,
    or the next step), are independent draws; and the same seed draws the same masks."""
    R, T, H = 16, 128, 8

    def masks() -> torch.Tensor:
        one_hot = torch.eye(T)[None, :, None, :].expand(R, T, H, T).contiguous()  # key j's value: e_j
        o = kernels.attention(torch.zeros(R, T, H, T), one_hot, one_hot, None, 1.0, 0.5)  # o[r,i,h,j] = w_ij
        return (o != 0).permute(0, 2, 1, 3)  # (R, H, Tq, Tk)

    torch.manual_seed(4)
    a, b = masks(), masks()
    live = torch.ones(T, T, dtype=torch.bool).tril()
    n = R * H * int(live.sum())
    assert n > 1_000_000 and abs(a[..., live].double().mean().item() - 0.5) < 5 * math.sqrt(0.25 / n)
    assert not a[..., ~live].any()  # nothing past the causal edge
    pairs = {"keys": (a[..., :, :-1], a[..., :, 1:], live[:, 1:]),
             "queries": (a[..., :-1, :], a[..., 1:, :], live[:-1]),
             "heads": (a[:, :-1], a[:, 1:], live), "rows": (a[:-1], a[1:], live), "calls": (a, b, live)}
    for what, (x, y, sel) in pairs.items():
        x, y = x[..., sel], y[..., sel]
        assert abs(_corr(x, y)) < 5 / math.sqrt(x.numel()), what
    torch.manual_seed(4)
    assert torch.equal(masks(), a)  # same seed, same masks


def _tiny_model(dropout: float) -> GPT:
    return GPT(GPTConfig(vocab_size=CharCorruptionDataset(tiny_corpus(), 64).vocab_size, block_size=64, n_layer=2,
                         n_head=2, n_embd=16, embd_pdrop=dropout, resid_pdrop=dropout, attn_pdrop=dropout))


def test_same_seed_same_losses_with_the_fused_kernels():
    losses = []
    for _ in range(2):
        torch.manual_seed(5)
        model = _tiny_model(0.1)
        tc = TrainConfig(max_epochs=3, batch_size=4, learning_rate=1e-3, final_tokens=10**6, layout="packed")
        t = Trainer(model, CharCorruptionDataset(tiny_corpus(), 64), tc, progress=False)
        assert t.kernels == "fused"
        losses.append(t.train().losses)
    assert losses[0] == losses[1]


def test_training_falls_back_to_torch_and_says_why_where_the_kernels_cannot_be_built(monkeypatch):
    from factgpt.stages import TrainOutcome

    monkeypatch.setattr(kernels, "unavailable", lambda: "CalledProcessError: no compiler")
    model = _tiny_model(0.1)
    tc = TrainConfig(max_epochs=1, batch_size=4, learning_rate=1e-3, final_tokens=10**6)
    t = Trainer(model, CharCorruptionDataset(tiny_corpus(), 64), tc, progress=False)
    assert (t.kernels, t.kernels_fallback) == ("torch", "they could not be built: CalledProcessError: no compiler")
    assert not any(getattr(m, "fused", False) for m in model.modules())
    st = t.train()
    notes, _ = TrainOutcome(st, 1.0, tc, kernels=t.kernels, kernels_fallback=t.kernels_fallback).account("pretrain")
    assert notes == ["note: the fused kernels were not used (they could not be built: CalledProcessError: no "
                     "compiler); trained with torch's operations"]


def test_a_head_size_the_kernels_do_not_take_trains_on_torch_and_says_so():
    corpus = CharCorruptionDataset(tiny_corpus(), 64)
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=24,
                          attn_pdrop=0.1, resid_pdrop=0.1, embd_pdrop=0.1))  # head size 12
    model.set_engine("fast")
    tc = TrainConfig(max_epochs=1, batch_size=4, learning_rate=1e-3, final_tokens=10**6)
    t = Trainer(model, corpus, tc, progress=False)
    assert t.kernels == "torch" and "head size 12" in t.kernels_fallback
    assert not any(getattr(m, "fused", False) for m in model.modules())
