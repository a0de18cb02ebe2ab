"""Typed configuration: the model (GPTConfig) and the optimisation (TrainConfig).

Defaults are the reference's (CS224N a5 run.py / trainer.py); every field says what it does.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

from factgpt.errors import FactgptError

BLOCK_SIZE = 128  # the study's context length, fixed in the reference run.py


@dataclass
class GPTConfig:
    vocab_size: int  # PAD, MASK and the distinct characters of the pretraining corpus
    block_size: int = BLOCK_SIZE  # longest input the model takes (learned positions)
    n_layer: int = 4  # transformer blocks (for the perceiver: down + n_layer-2 inner + up)
    n_head: int = 8  # attention heads per block
    n_embd: int = 256  # width of the residual stream
    embd_pdrop: float = 0.1  # dropout on token+position embeddings
    resid_pdrop: float = 0.1  # dropout on each attention and MLP output
    attn_pdrop: float = 0.1  # dropout on attention weights
    perceiver: bool = False  # the learned-basis (Perceiver-style) variant
    bottleneck_dim: int | None = None  # m, the latent length of the perceiver (None for vanilla)
    # How attention is computed; a runtime choice that does not change the parameters:
    # "sdpa" is torch's fused scaled_dot_product_attention, "explicit" the reference's
    # masked softmax (kept to measure against and to prove both agree).
    attn_impl: Literal["sdpa", "explicit"] = "sdpa"

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise FactgptError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.perceiver and not (self.bottleneck_dim and 0 < self.bottleneck_dim <= self.block_size):
            raise FactgptError(f"the perceiver variant needs 0 < bottleneck_dim <= {self.block_size}")
        if self.perceiver and self.n_layer < 2:
            raise FactgptError("the perceiver variant needs n_layer >= 2 (down and up blocks)")
        if min(self.n_layer, self.n_head, self.n_embd, self.vocab_size, self.block_size) < 1:
            raise FactgptError("n_layer, n_head, n_embd, vocab_size and block_size must be positive")
        if not self.perceiver:
            self.bottleneck_dim = None

    @property
    def variant(self) -> str:
        return "perceiver" if self.perceiver else "vanilla"

    def identity(self) -> dict:
        """The fields that decide the parameters' shapes and meaning (what a checkpoint pins)."""
        d = asdict(self)
        d.pop("attn_impl")
        return d


@dataclass
class TrainConfig:
    max_epochs: int  # passes over the dataset
    batch_size: int  # examples per optimiser step
    learning_rate: float  # peak learning rate (the multiplier below scales it)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas (reference)
    grad_norm_clip: float = 1.0  # clip the global gradient norm to this (reference)
    # AdamW weight decay, applied to every parameter whose name has no "bias" in it: the
    # reference's filter also lists "LayerNorm.weight", which matches no name in this model, so
    # LayerNorm weights, the embeddings and the perceiver basis C are decayed too.
    weight_decay: float = 0.1
    lr_decay: bool = True  # linear warm-up then the reference's cosine multiplier
    warmup_tokens: int = 512 * 20  # tokens of linear warm-up (reference)
    # tokens at which the cosine reaches its floor; the reference sets 200 * len(pretraining
    # documents) * block_size for pretraining and finetuning alike. Past it the multiplier
    # rises again (cos keeps turning; only the 0.1 floor holds): reproduced on purpose.
    final_tokens: int = 0
    seed: int = 0  # seeds parameter init, dropout and the corruption draws
    # How training computes. "fast": vectorised batches laid out by `layout`, fused attention,
    # fused AdamW. "reference": padded rows through a DataLoader, explicit attention, for-each
    # AdamW, as the reference runs.
    engine: Literal["fast", "reference"] = "fast"
    # "auto": bf16 autocast where the hardware runs bf16 matmuls natively (AVX512-BF16/AMX CPUs,
    # bf16-capable GPUs) on the fast engine, fp32 elsewhere and on the reference engine; "fp32": the
    # reference arithmetic; "bf16": autocast wherever torch supports it.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # How the fast engine lays out a batch: "grouped" (examples of similar length together, each
    # group trimmed to its longest) or "packed" (several examples per row, block-diagonal mask).
    layout: Literal["grouped", "packed"] = "grouped"
    group_tokens: int = 4096  # ids per group of the grouped layout (rows x trimmed length)
    # Examples in a new seeded order every epoch instead of file order (the reference's order).
    # Multi-process runs shuffle: each global batch is then split across the processes.
    shuffle: bool = False
    compile: bool = False  # torch.compile the model (falls back to eager where it cannot compile)
    log_every: int = 1  # write TensorBoard scalars every this many steps
    extra: dict = field(default_factory=dict)  # free-form notes carried into checkpoints


def json_roundtrip(d: dict) -> dict:
    """`d` as it reads back from a JSON record (tuples become lists), for comparing with one."""
    return json.loads(json.dumps(d))


def final_tokens_for(n_pretrain_docs: int, block_size: int = BLOCK_SIZE) -> int:
    """The reference's final_tokens: 200 * len(pretraining dataset) * block_size."""
    return 200 * n_pretrain_docs * block_size


def pretrain_config(n_pretrain_docs: int, lr: float = 6e-3, **overrides) -> TrainConfig:
    """The reference pretraining recipe: 650 epochs, batch 128, lr 6e-3."""
    base = dict(max_epochs=650, batch_size=128, learning_rate=lr,
                final_tokens=final_tokens_for(n_pretrain_docs))
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


def finetune_config(n_pretrain_docs: int, pretrained: bool, lr: float = 6e-4,
                    **overrides) -> TrainConfig:
    """The reference finetuning recipe: 10 epochs after pretraining, 75 without; batch 256."""
    base = dict(max_epochs=10 if pretrained else 75, batch_size=256, learning_rate=lr,
                final_tokens=final_tokens_for(n_pretrain_docs))
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)
