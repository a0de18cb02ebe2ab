"""The GPT of the study, vanilla and perceiver, with reference-compatible parameter names.

- Attention serves self-attention (kv is None) and cross-attention (kv given); its mask is the
  top-left corner of a lower-triangular matrix (query i sees key j only when j <= i), which is
  the reference's causal mask for both.
- Block: pre-LayerNorm attention + 4x GELU MLP, residual around each.
- DownProjectBlock / UpProjectBlock: the perceiver's cross-attention in and out of a learned
  basis C of m latents.
- GPT: token + learned position embedding, the blocks, a final LayerNorm, a bias-free head;
  the loss ignores PAD (id 0).

Parameter names match the reference's state dict (tok_emb, pos_emb, blocks.N.attn.key, ...), so
its checkpoints load; the reference's `attn.mask` buffers are not kept (masks are built on the
fly) and are dropped on load.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from factgpt import kernels
from factgpt.config import GPTConfig
from factgpt.data import PAD_ID
from factgpt.errors import FactgptError


def causal_mask(t_q: int, t_k: int, device=None) -> torch.Tensor:
    """(t_q, t_k) bool: query i may see key j when j <= i (the top-left corner of tril)."""
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril()


def keep_mask(shape: torch.Size | tuple[int, ...], keep: float, device=None) -> torch.Tensor:
    """A bool mask, True with probability `keep` independently per element, from the default
    torch generator (seeded by torch.manual_seed and saved in resume points).

    torch's Bernoulli sampler costs about 10 ns per element on CPU; here every 64-bit draw of
    `random_` gives two 32-bit uniforms: the low word is uniform over all of int32, the high word
    over [0, 2**31) (random_ leaves the sign bit clear), so each half is compared with its own
    threshold. The keep probability is exact to 2**-31 (torch's float sampler: 2**-24).
    """
    n = math.prod(shape)
    draws = torch.empty((n + 1) // 2, dtype=torch.int64, device=device).random_()
    halves = draws.view(torch.int32).view(-1, 2)  # (n/2, 2): [low word, high word] (little-endian)
    low = min(round(keep * 2**32) - 2**31, 2**31 - 1)  # keep if low word < this
    high = min(round(keep * 2**31), 2**31 - 1)  # keep if high word < this
    thresholds = torch.tensor([low, high], dtype=torch.int32, device=device)
    return (halves < thresholds).view(-1)[:n].view(shape)


class Dropout(nn.Dropout):
    """nn.Dropout, or (fast=True) the same distribution with masks from `keep_mask`."""

    engine: str = "reference"  # set by GPT.set_engine: the fast engine draws its masks with keep_mask
    fused: bool = False  # set by GPT.set_kernels: on a CPU, the fused kernel (no mask kept for the backward)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.engine == "fast" and self.training and self.p > 0):
            return super().forward(x)
        if self.p >= 1:
            return torch.zeros_like(x)
        if self.fused and x.device.type == "cpu":
            return kernels.dropout(x, self.p)
        keep = 1.0 - self.p
        return torch.where(keep_mask(x.shape, keep, x.device), x * (1.0 / keep), 0.0)


class Attention(nn.Module):
    """Multi-head attention: self-attention over x, or cross-attention from x into kv."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.key = nn.Linear(config.n_embd, config.n_embd)
        self.query = nn.Linear(config.n_embd, config.n_embd)
        self.value = nn.Linear(config.n_embd, config.n_embd)
        self.attn_drop = Dropout(config.attn_pdrop)
        self.resid_drop = Dropout(config.resid_pdrop)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.n_head = config.n_head
        self.engine = config.engine
        self.fused = False  # set by GPT.set_kernels: the fused attention of the fast engine

    def heads(self, t: torch.Tensor) -> torch.Tensor:
        B, T, C = t.shape
        return t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0, documents: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, Tq, C) queries; kv: (B, Tk, C) keys/values source (default x);
        mask: bool, broadcastable to (B, nh, Tq, Tk), True where attention is allowed (default:
        causal top-left); cache: append this step's keys/values and attend over all of them;
        documents (B, T): the example of each position of packed rows, which the fused attention
        reads instead of the mask."""
        kv = x if kv is None else kv
        B, Tq, C = x.shape
        if self.fused and self.engine == "fast" and cache is None:
            return self.resid_drop(self.proj(self._fused(x, kv, mask, documents)))
        q = self.heads(self.query(x))  # (B, nh, Tq, hs)
        k = self.heads(self.key(kv))  # (B, nh, Tk, hs)
        v = self.heads(self.value(kv))  # (B, nh, Tk, hs)
        if cache is not None:
            k, v = cache.append(layer, k, v)  # (B, nh, Tpast+Tk, hs)
        dropping = self.training and self.attn_drop.p > 0
        if self.engine == "fast" and not dropping:
            # fused attention; no mask means causal (SDPA's is_causal is the same top-left corner)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        else:
            # The reference's arithmetic: scaled scores, -1e10 where masked, softmax, dropout. On the
            # fast path SDPA would fall back to this same math with torch's slow dropout masks, so
            # the fast path computes it here with attn_drop's fast masks.
            if mask is None:
                mask = causal_mask(Tq, k.shape[2], device=x.device)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, nh, Tq, Tk)
            att = att.masked_fill(~mask, -1e10)
            att = self.attn_drop(F.softmax(att, dim=-1))
            y = att @ v  # (B, nh, Tq, hs)
        y = y.transpose(1, 2).contiguous().view(B, Tq, C)  # re-assemble heads: (B, Tq, C)
        return self.resid_drop(self.proj(y))

    def _fused(self, x: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None,
               documents: torch.Tensor | None) -> torch.Tensor:
        """The fast engine's fused attention, (B, Tq, C): on a CPU factgpt's kernel over the live
        entries only (heads kept in the linear layers' layout, the dropout drawn inside); on a GPU
        torch's fused attention, which drops out in-kernel too."""
        B, Tq, C = x.shape
        Tk, hs = kv.shape[1], C // self.n_head
        p = self.attn_drop.p if self.training else 0.0
        if x.device.type == "cpu":
            q = self.query(x).view(B, Tq, self.n_head, hs)  # (B, Tq, nh, hs)
            k = self.key(kv).view(B, Tk, self.n_head, hs)  # (B, Tk, nh, hs)
            v = self.value(kv).view(B, Tk, self.n_head, hs)
            return kernels.attention(q, k, v, documents, 1.0 / math.sqrt(hs), p).view(B, Tq, C)
        q, k, v = self.heads(self.query(x)), self.heads(self.key(kv)), self.heads(self.value(kv))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=mask is None)
        return y.transpose(1, 2).contiguous().view(B, Tq, C)


def mlp(config: GPTConfig) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(config.n_embd, 4 * config.n_embd),
        nn.GELU(),
        nn.Linear(4 * config.n_embd, config.n_embd),
        Dropout(config.resid_pdrop),
    )


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.attn = Attention(config)
        self.mlp = mlp(config)

    def forward(self, x, mask=None, cache=None, layer=0, documents=None):
        x = x + self.attn(self.ln1(x), mask=mask, cache=cache, layer=layer, documents=documents)
        return x + self.mlp(self.ln2(x))


class DownProjectBlock(Block):
    """Cross-attention from a learned basis C (1, m, C) into the embedded input: output (B, m, C).

    LayerNorm on C before attention, residual on C; latent i sees input positions <= i only.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.C = nn.Parameter(torch.empty(1, config.bottleneck_dim, config.n_embd))
        nn.init.xavier_uniform_(self.C)

    def forward(self, x_input: torch.Tensor, mask=None, cache=None, layer=0, c=None) -> torch.Tensor:
        """x_input (B, T, C) -> (B, m, C). Decoding with a cache gives c, the latents' query rows
        (B, t, C) (rows of self.C), which attend to the cached inputs and the new ones x_input
        (B, t, C), which the cache takes in."""
        if c is None:
            c = self.C.expand(x_input.shape[0], -1, -1)  # (B, m, C)
        y = c + self.attn(self.ln1(c), kv=x_input, mask=mask, cache=cache, layer=layer)
        return y + self.mlp(self.ln2(y))


class UpProjectBlock(Block):
    """Cross-attention from the input positions into the latents: output (B, l, C).

    LayerNorm on the latents Y before attention, residual on the input X.
    """

    def forward(self, y: torch.Tensor, x_input: torch.Tensor, mask=None, cache=None, layer=0) -> torch.Tensor:
        """y (B, m, C) latents, x_input (B, T, C) -> (B, T, C). With a cache, the new inputs attend
        to the cached latents and the new ones y (B, t, C), which the cache takes in."""
        x = x_input + self.attn(x_input, kv=self.ln1(y), mask=mask, cache=cache, layer=layer)
        return x + self.mlp(self.ln2(x))


class KVCache:
    """Keys and values of every layer for incremental decoding: (B, nh, S, hs) per layer."""

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_size: int,
                 device=None, dtype=torch.float32) -> None:
        shape = (batch, n_head, max_len, head_size)
        self.k = [torch.empty(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.empty(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.length = 0  # positions filled (the same for every layer once a step ends)
        self._pending = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        t = k.shape[2]
        end = self.length + t
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        self._pending = t
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self) -> None:
        self.length += self._pending
        self._pending = 0


class GPT(nn.Module):
    """The full language model; forward(idx, targets) returns (logits, loss) as the reference."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, config.block_size, config.n_embd))
        self.drop = Dropout(config.embd_pdrop)
        self.perceiver = config.perceiver
        if config.perceiver:
            self.down_block = DownProjectBlock(config)
            self.blocks = nn.Sequential(*[Block(config) for _ in range(config.n_layer - 2)])
            self.up_block = UpProjectBlock(config)
        else:
            self.blocks = nn.Sequential(*[Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.block_size = config.block_size
        self.apply(self._init_weights)
        self.set_engine(config.engine)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)

    def get_block_size(self) -> int:
        return self.block_size

    def set_engine(self, engine: str) -> None:
        """Switch between the fast computation ("fast": fused attention, fast dropout masks) and
        the reference's ("reference": masked softmax, torch's Bernoulli masks); same parameters."""
        self.config.engine = engine
        for m in self.modules():
            if isinstance(m, (Attention, Dropout)):
                m.engine = engine

    def set_kernels(self, fused: bool) -> str | None:
        """Train the fast engine through its fused kernels (`fused`: factgpt's on a CPU, see
        factgpt.kernels, for the head sizes they take; torch's fused attention on a GPU) or through
        torch's operations. Returns why not, where fused kernels were asked for and cannot serve."""
        head_size, why = self.config.n_embd // self.config.n_head, None
        if fused and head_size not in kernels.HEAD_SIZES:
            sizes = ", ".join(map(str, kernels.HEAD_SIZES))
            fused, why = False, f"head size {head_size} is not one they take ({sizes})"
        for m in self.modules():
            if isinstance(m, (Attention, Dropout)):
                m.fused = fused
        return why

    def set_dropout(self, p: float) -> None:
        """All three dropouts to `p`, in the config (which a checkpoint records) and every module.
        Training that starts from a checkpoint (finetuning, or more pretraining) runs at its own
        recipe's dropout, as the reference's finetuning does (its state dicts carry no dropout; its
        GPTConfig says 0.1)."""
        if not 0 <= p < 1:  # p = 1 would zero every activation, p < 0 scale them up
            raise FactgptError(f"dropout must be in [0, 1), not {p}")
        c = self.config
        c.embd_pdrop = c.resid_pdrop = c.attn_pdrop = p
        for m in self.modules():
            if isinstance(m, Dropout):
                m.p = p

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                positions: torch.Tensor | None = None, documents: torch.Tensor | None = None):
        """idx, targets: (B, T). positions and documents (B, T), given together, describe a packed
        batch: each id's position inside its own example and the example it belongs to."""
        B, T = idx.shape
        if T > self.block_size:
            raise ValueError(f"sequence of {T} exceeds the block size {self.block_size}")
        if positions is None:
            pos = self.pos_emb[:, :T, :]  # (1, T, C)
            mask = None
        else:
            if self.perceiver:
                raise ValueError("packed batches are not supported by the perceiver variant")
            pos = self.pos_emb[0, positions]  # (B, T, C)
            mask = None  # the fused CPU kernel reads the documents: no (B, T, T) mask to build
            if not (self.blocks[0].attn.fused and idx.device.type == "cpu"):
                same = documents[:, :, None] == documents[:, None, :]  # (B, T, T)
                mask = (same & causal_mask(T, T, device=idx.device))[:, None]  # (B, 1, T, T)
        x_input = self.drop(self.tok_emb(idx) + pos)  # (B, T, C)
        if self.perceiver:
            x = self.down_block(x_input)  # (B, m, C)
            x = self.blocks(x)  # (B, m, C)
            x = self.up_block(x, x_input)  # (B, T, C)
        else:
            x = x_input
            for block in self.blocks:
                x = block(x, mask=mask, documents=documents)
        logits = self.head(self.ln_f(x))  # (B, T, V)
        loss = lm_loss(logits, targets) if targets is not None else None
        return logits, loss

    @torch.no_grad()
    def forward_cached(self, idx: torch.Tensor, positions: torch.Tensor, key_valid: torch.Tensor,
                       cache: KVCache) -> torch.Tensor:
        """Incremental forward for decoding: idx (B, t) new ids at `positions` (B, t); key_valid
        (B, S) marks which of all S = cache.length + t columns hold real ids (False for left
        padding); a row's real ids must be at positions 0, 1, 2, ... in column order. cache holds
        config.n_layer layers. Returns logits (B, t, V)."""
        B, t = idx.shape
        S = cache.length + t
        x = self.tok_emb(idx) + self.pos_emb[0, positions]  # (B, t, C)
        new = causal_mask(t, t, device=idx.device)  # new ids see each other causally
        causal = torch.cat([torch.ones(t, cache.length, dtype=torch.bool, device=idx.device), new], 1)
        mask = (causal[None] & key_valid[:, None, :])[:, None]  # (B, 1, t, S)
        mask[..., -t:] |= torch.eye(t, dtype=torch.bool, device=idx.device)  # never an empty row
        if self.perceiver:
            x = self._perceiver_cached(x, positions, key_valid, causal, mask, cache)
        else:
            for layer, block in enumerate(self.blocks):
                x = block(x, mask=mask, cache=cache, layer=layer)
        cache.advance()
        assert cache.length == S
        return self.head(self.ln_f(x))

    def _perceiver_cached(self, x: torch.Tensor, positions: torch.Tensor, key_valid: torch.Tensor,
                          causal: torch.Tensor, in_mask: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """The perceiver's layers in forward_cached: x (B, t, C) the new embedded ids, causal (t, S)
        new column sees column j <= its own, in_mask (B, 1, t, S) that and real ids only.

        Column j of the cache holds input id j and, beside it, latent j: latent i depends only on
        inputs <= i and (inner blocks) latents <= i, so once computed it is final, and position p
        needs latents <= min(p, m - 1), all in columns <= its own. A column holds a real latent
        when its id is real and its position is below m; the others (padding, positions >= m) are
        computed with the batch and masked out of every attention that reads latents.
        Layers of the cache: 0 the down-projection's inputs, 1.. the inner blocks, last the
        up-projection's latents."""
        m = self.config.bottleneck_dim
        t = x.shape[1]
        latent = key_valid & (key_valid.cumsum(-1) <= m)  # (B, S): real latent in this column
        eye = torch.eye(t, dtype=torch.bool, device=x.device)
        lat_mask = (causal[None] & latent[:, None, :])[:, None]  # (B, 1, t, S)
        # An input at position >= m has no latent of its own in its column: its row must not get
        # the diagonal; a padding row has nothing to see, so it does (never an empty row).
        up_mask = lat_mask.clone()
        up_mask[..., -t:] |= (eye & ~key_valid[:, -t:, None])[:, None]  # (B, 1, t, t)
        lat_mask[..., -t:] |= eye  # a masked-out latent sees itself, so it stays finite
        if bool(latent[:, -t:].any()):
            c = self.down_block.C[0, positions.clamp(max=m - 1)]  # (B, t, C): latent j's query row
            y = self.down_block(x, in_mask, cache=cache, layer=0, c=c)
            for i, block in enumerate(self.blocks):
                y = block(y, mask=lat_mask, cache=cache, layer=1 + i)
        else:  # every row is past its m latents: only the up-projection has work to do
            for layer in range(len(self.blocks) + 1):  # zeros: read only where masked out
                z = cache.k[layer].new_zeros(x.shape[0], cache.k[layer].shape[1], t, cache.k[layer].shape[3])
                cache.append(layer, z, z)
            y = torch.zeros_like(x)
        return self.up_block(y, x, up_mask, cache=cache, layer=len(self.blocks) + 1)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of (B, T, V) logits against (B, T) targets, in fp32, over the non-PAD targets
    only (PAD is never learnt): their mean (the reference's loss) or their sum."""
    flat_logits = logits.float().view(-1, logits.size(-1))  # (B*T, V)
    flat_targets = targets.reshape(-1)  # (B*T,)
    return F.cross_entropy(flat_logits, flat_targets, ignore_index=PAD_ID, reduction=reduction)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
