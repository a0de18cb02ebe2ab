"""Model shapes, parameter counts, causality, and agreement between the computation paths."""

from __future__ import annotations

import pytest
import torch

from factgpt.batches import pack
from factgpt.config import GPTConfig
from factgpt.data import CharCorruptionDataset
from factgpt.decode import generate_batched, generate_reference
from factgpt.model import GPT, Attention, DownProjectBlock, UpProjectBlock, count_parameters

from conftest import LONG


def tiny(perceiver=False, m=8, **kw):
    return GPTConfig(vocab_size=40, block_size=32, n_layer=3, n_head=2, n_embd=16,
                     perceiver=perceiver, bottleneck_dim=m if perceiver else None, **kw)


@pytest.mark.parametrize("perceiver,m,expected", [(False, None, 3_323_392), (True, 32, 3_331_584),
                                                  (True, 64, 3_339_776)])
def test_parameter_counts(perceiver, m, expected):
    assert count_parameters(GPT(GPTConfig(vocab_size=256, perceiver=perceiver, bottleneck_dim=m))) == expected


@pytest.mark.parametrize("B,Tq,Tk", [(1, 5, 5), (3, 4, 9), (2, 9, 4)])
def test_attention_shapes(B, Tq, Tk):
    attn = Attention(tiny())
    x, kv = torch.randn(B, Tq, 16), torch.randn(B, Tk, 16)
    assert attn(x).shape == (B, Tq, 16)
    assert attn(x, kv=kv).shape == (B, Tq, 16)


@pytest.mark.parametrize("T", [3, 8, 20])
def test_projection_block_shapes(T):
    cfg = tiny(perceiver=True, m=8)
    x = torch.randn(2, T, 16)
    y = DownProjectBlock(cfg)(x)
    assert y.shape == (2, 8, 16)
    assert UpProjectBlock(cfg)(y, x).shape == (2, T, 16)


@pytest.mark.parametrize("perceiver", [False, True])
@pytest.mark.parametrize("t", [0, 5, 17])
def test_causality(perceiver, t):
    model = GPT(tiny(perceiver)).eval()
    x = torch.randint(2, 40, (2, 30))
    x2 = x.clone()
    x2[:, t + 1:] = torch.randint(2, 40, (2, 30 - t - 1))
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(x2)
    assert torch.equal(a[:, : t + 1], b[:, : t + 1])
    assert not torch.equal(a[:, t + 1:], b[:, t + 1:])


def test_sdpa_and_explicit_attention_agree():
    model = GPT(tiny()).eval()
    x = torch.randint(2, 40, (3, 32))
    with torch.no_grad():
        a, _ = model(x)
        model.set_engine("reference")
        b, _ = model(x)
    assert torch.allclose(a, b, atol=1e-5)


def test_packed_batch_gives_the_padded_batch_loss():
    ds = CharCorruptionDataset(LONG + "\n" + LONG[::-1] + "\n", 32, seed=2)
    model = GPT(GPTConfig(vocab_size=ds.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    x, y = ds.draw_batch(torch.arange(24) % 2)
    b = pack(x, y, 32)
    with torch.no_grad():
        _, padded = model(x, y)
        _, packed = model(b.x, b.y, positions=b.positions, documents=b.documents)
    assert b.x.shape[0] < 24
    assert abs(padded.item() - packed.item()) < 1e-5


@pytest.mark.parametrize("perceiver", [False, True])
def test_batched_decoding_matches_one_at_a_time(perceiver):
    model = GPT(tiny(perceiver)).eval()
    prompts = [torch.randint(2, 40, (n,)).tolist() for n in (3, 9, 1, 14, 9, 5)]
    prompts.append(torch.randint(2, 40, (25,)).tolist())  # too long for the cache: cropped path
    batched = generate_batched(model, prompts, 12, stop_id=None)
    for p, got in zip(prompts, batched):
        assert got == generate_reference(model, p, 12)


def test_stop_id_truncates_after_the_stop():
    model = GPT(tiny()).eval()
    prompts = [[3, 4, 5], [6, 7]]
    full = generate_batched(model, prompts, 10, stop_id=None)
    stop = full[0][3 + 2]  # the third generated id of row 0
    got = generate_batched(model, prompts, 10, stop_id=stop)
    assert got[0] == full[0][: full[0].index(stop, 3) + 1]


def test_batched_decoding_with_a_shared_prefix():
    model = GPT(tiny()).eval()
    head = [5, 6, 7, 8]
    prompts = [head + torch.randint(2, 40, (n,)).tolist() for n in (1, 6, 3, 9, 2)] + [head[:2] + [9]]
    batched = generate_batched(model, prompts, 10, stop_id=None, batch_size=3)
    for p, got in zip(prompts, batched):
        assert got == generate_reference(model, p, 10)
