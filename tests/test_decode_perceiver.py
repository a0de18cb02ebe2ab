"""The perceiver's cached decoding (GPT.forward_cached) computes what its full forward computes; predict
decodes with its engine's attention."""

from __future__ import annotations

import pytest
import torch

from factgpt.config import GPTConfig
from factgpt.data import PAD_ID
from factgpt.decode import generate_batched, generate_reference
from factgpt.model import GPT, KVCache


def perceiver(m: int, impl: str = "fast", seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=40, block_size=32, n_layer=3, n_head=2, n_embd=16, perceiver=True,
                          bottleneck_dim=m, engine=impl)).eval()
    with torch.no_grad():  # spread the weights out: the 0.02 init gives near-tied logits
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def prompts_of(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, 40, (n,), generator=g).tolist() for n in lengths]


@pytest.mark.parametrize("m", [3, 8])
@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_cached_logits_match_the_full_forward_at_every_step(m, impl):
    # lengths below, at and above m in one batch, left-padded as decode does; 10 steps cross m
    model = perceiver(m, impl)
    prompts = prompts_of([1, 2, m, m + 3, 6])
    steps = 10
    g = torch.Generator().manual_seed(2)
    cont = torch.randint(2, 40, (len(prompts), steps), generator=g)
    B, R = len(prompts), max(len(p) for p in prompts)
    pad = torch.tensor([R - len(p) for p in prompts])
    x = torch.full((B, R), PAD_ID, dtype=torch.long)
    for i, p in enumerate(prompts):
        x[i, R - len(p):] = torch.tensor(p)
    j = torch.arange(R)[None]
    valid = j >= pad[:, None]  # (B, R)
    cache = KVCache(3, B, 2, R + steps, 8)
    got = model.forward_cached(x, (j - pad[:, None]).clamp(min=0), valid, cache)  # (B, R, V)
    with torch.no_grad():
        for i, p in enumerate(prompts):  # every real position of the prompt, not only the last
            want, _ = model(torch.tensor([p]))
            assert (got[i, R - len(p):] - want[0]).abs().max().item() < 1e-5
        for s in range(steps):
            valid = torch.cat([valid, torch.ones(B, 1, dtype=torch.bool)], dim=1)
            pos = torch.tensor([[len(p) + s] for p in prompts])  # (B, 1)
            got = model.forward_cached(cont[:, s:s + 1], pos, valid, cache)[:, -1]  # (B, V)
            for i, p in enumerate(prompts):
                want, _ = model(torch.cat([torch.tensor(p), cont[i, :s + 1]])[None])
                assert (got[i] - want[0, -1]).abs().max().item() < 1e-5, (m, i, s)


@pytest.mark.parametrize("m", [3, 8])
@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_batched_answers_are_the_one_at_a_time_answers(m, impl):
    model = perceiver(m, impl)
    head = [5, 6, 7, 8]  # a shared prefix, as "Where was " in the study's questions
    prompts = prompts_of([1, 2, 3, 5, 8, 9, 9, 14, 20])
    prompts += [head + p for p in prompts_of([1, 3, 6, 11], seed=3)]
    prompts.append(prompts_of([25])[0])  # too long for 12 steps in the block: one at a time
    for batch_size in (128, 4):
        got = generate_batched(model, prompts, 12, stop_id=None, batch_size=batch_size)
        for p, g in zip(prompts, got):
            assert g == generate_reference(model, p, 12)


@pytest.mark.parametrize("m", [3, 8])  # the shared prefix crosses m = 3; with m = 8 it stays below
def test_a_shared_prefix_computed_once_gives_the_one_at_a_time_answers(m):
    """Every real question starts "Where was ": a batch made only of such prompts computes the prefix
    once and broadcasts its cache into every row (in the test above no batch shares one)."""
    from factgpt.decode import _common_prefix

    model = perceiver(m)
    head = [5, 6, 7, 8]
    prompts = [head + p for p in prompts_of([1, 2, 3, 6, 11], seed=4)]
    assert _common_prefix(prompts) == len(head)
    got = generate_batched(model, prompts, 12, stop_id=None)
    for p, g in zip(prompts, got):
        assert g == generate_reference(model, p, 12)


def test_batched_answers_stop_where_the_full_answer_has_the_stop_id():
    model = perceiver(8)
    prompts = prompts_of([2, 4, 7, 10])
    full = generate_batched(model, prompts, 14, stop_id=None)
    stop = full[1][4 + 3]  # the fourth generated id of row 1, past the m = 8 latents
    got = generate_batched(model, prompts, 14, stop_id=stop)
    for p, f, g in zip(prompts, full, got):
        new = f[len(p):]
        assert g == (p + new[: new.index(stop) + 1] if stop in new else f)


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_predict_decodes_with_its_engines_attention_and_restores_the_models(engine, monkeypatch):
    from factgpt.data import Question, Vocab
    from factgpt.evaluate import predict
    from factgpt.model import Attention

    seen = set()
    forward = Attention.forward

    def spy(self, *a, **k):
        seen.add(self.engine)
        return forward(self, *a, **k)

    monkeypatch.setattr(Attention, "forward", spy)
    vocab = Vocab.from_text("Where was ab born?")
    model = GPT(GPTConfig(vocab_size=len(vocab), block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    model.set_engine("reference" if engine == "fast" else "fast")  # the other one, as mid-training
    before = model.config.engine
    predict(model, [Question("Where was ab born?", None, 1)], vocab, engine=engine)
    assert seen == {engine} and model.config.engine == before
