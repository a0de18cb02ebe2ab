"""Generation: greedy (the study's evaluation) and sampled, one at a time or batched.

- `generate_reference`: the reference's utils.sample, one prompt at a time, the whole prefix
  recomputed at every step (cropped to the block size).
- `generate_batched`: all prompts at once, with a key/value cache and the prompts left-padded
  (positions start at 0 at each prompt's first real id, padded keys masked out). Both variants
  decode this way: in the column of the id at position p, the perceiver's cache keeps the
  down-projection's keys/values of that id and the inner and up blocks' of latent p (masked out
  when p >= m), all final once computed since latent p depends only on ids at positions <= p
  (GPT.forward_cached). A row stops once it has produced `stop_id`; the others go on. The
  predictions are those of the reference (tested on ../shared/conformance).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from factgpt.data import MASK_ID, PAD_ID
from factgpt.model import GPT, KVCache


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None, sample: bool,
          generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) logits -> (B,) next ids: argmax, or a draw after temperature and top-k."""
    if not sample:
        return torch.topk(logits, k=1, dim=-1).indices[:, 0]  # as the reference: topk of probs
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def generate_reference(model: GPT, prompt: list[int], steps: int, *, temperature: float = 1.0,
                       top_k: int | None = None, sample: bool = False,
                       generator: torch.Generator | None = None) -> list[int]:
    """One prompt, `steps` new ids, the whole prefix recomputed each step (utils.sample)."""
    model.eval()
    device = model.pos_emb.device
    x = torch.tensor([prompt], dtype=torch.long, device=device)
    bs = model.get_block_size()
    for _ in range(steps):
        x_cond = x if x.size(1) <= bs else x[:, -bs:]
        logits, _ = model(x_cond)
        ix = _pick(logits[:, -1, :].float(), temperature, top_k, sample, generator)
        x = torch.cat((x, ix[:, None]), dim=1)
    return x[0].tolist()


@torch.no_grad()
def generate_batched(model: GPT, prompts: list[list[int]], steps: int, *, stop_id: int | None = MASK_ID,
                     temperature: float = 1.0, top_k: int | None = None, sample: bool = False,
                     generator: torch.Generator | None = None, batch_size: int = 128) -> list[list[int]]:
    """Each prompt followed by up to `steps` generated ids (fewer once `stop_id` is produced).

    Rows whose prompt plus steps would not fit in the block are decoded one at a time with the
    reference's cropping, so every row gets the reference's answer.
    """
    model.eval()
    bs = model.get_block_size()
    out: list[list[int] | None] = [None] * len(prompts)
    fits = [i for i, p in enumerate(prompts) if len(p) + steps <= bs]
    for i in sorted(set(range(len(prompts))) - set(fits)):
        out[i] = generate_reference(model, prompts[i], steps, temperature=temperature,
                                    top_k=top_k, sample=sample, generator=generator)
    # Group similar lengths together so little padding is computed.
    fits.sort(key=lambda i: len(prompts[i]))
    for start in range(0, len(fits), batch_size):
        chunk = fits[start:start + batch_size]
        rows = _cached(model, [prompts[i] for i in chunk], steps, stop_id, temperature, top_k, sample,
                       generator)
        for i, r in zip(chunk, rows):
            out[i] = r
    return out  # type: ignore[return-value]


def _trim(prompt: list[int], new: list[int], stop_id: int | None) -> list[int]:
    if stop_id is not None and stop_id in new:
        new = new[: new.index(stop_id) + 1]
    return prompt + new


def _common_prefix(prompts: list[list[int]]) -> int:
    """Length of the prefix every prompt shares, leaving at least one id of each prompt after it."""
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for i in range(n):
        if any(p[i] != first[i] for p in prompts):
            return i
    return max(n, 0)


def _cached(model, prompts, steps, stop_id, temperature, top_k, sample, generator):
    """Batched decoding with a KV cache. The prefix all prompts share ("Where was ") is computed
    once and broadcast into every row's cache; the rest of each prompt is left-padded after it."""
    device = model.pos_emb.device
    B = len(prompts)
    lens = torch.tensor([len(p) for p in prompts], device=device)
    c = _common_prefix(prompts)
    rest = [p[c:] for p in prompts]
    R = max(len(r) for r in rest)
    cfg = model.config
    hs = cfg.n_embd // cfg.n_head
    # config.n_layer cached layers: the blocks, or the perceiver's down, inner and up blocks
    cache = KVCache(cfg.n_layer, B, cfg.n_head, c + R + steps, hs, device=device, dtype=model.pos_emb.dtype)
    if c:
        shared = KVCache(cfg.n_layer, 1, cfg.n_head, c, hs, device=device, dtype=model.pos_emb.dtype)
        ids = torch.tensor([prompts[0][:c]], dtype=torch.long, device=device)
        model.forward_cached(ids, torch.arange(c, device=device)[None], torch.ones(1, c, dtype=torch.bool,
                                                                                   device=device), shared)
        for layer in range(cfg.n_layer):  # broadcast the shared keys/values to every row
            cache.k[layer][:, :, :c] = shared.k[layer]
            cache.v[layer][:, :, :c] = shared.v[layer]
        cache.length = c
    pad = R - torch.tensor([len(r) for r in rest], device=device)  # left padding of each rest
    x = torch.full((B, R), PAD_ID, dtype=torch.long, device=device)
    for i, r in enumerate(rest):
        x[i, R - len(r):] = torch.tensor(r, dtype=torch.long)
    j = torch.arange(R, device=device)[None, :]
    valid = torch.cat([torch.ones(B, c, dtype=torch.bool, device=device), j >= pad[:, None]], dim=1)
    positions = c + (j - pad[:, None]).clamp(min=0)  # (B, R): the rest continues after the prefix
    logits = model.forward_cached(x, positions, valid, cache)[:, -1, :]  # (B, V)
    new = torch.empty(B, 0, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for step in range(steps):
        ix = _pick(logits.float(), temperature, top_k, sample, generator)  # (B,)
        new = torch.cat([new, ix[:, None]], dim=1)
        if stop_id is not None:
            done |= ix == stop_id
            if bool(done.all()):
                break
        if step == steps - 1:
            break
        valid = torch.cat([valid, torch.ones(B, 1, dtype=torch.bool, device=device)], dim=1)
        pos = (lens + step)[:, None]  # (B, 1) position of the id just produced
        logits = model.forward_cached(ix[:, None], pos, valid, cache)[:, -1, :]
    return [_trim(p, r, stop_id) for p, r in zip(prompts, new.tolist())]
