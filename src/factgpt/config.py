"""Typed configuration: the model (GPTConfig), the optimisation (TrainConfig), the span corruption
(Corruption) and the recipe that chooses all three for a run (Recipe).

Defaults are the reference's (CS224N a5 run.py / trainer.py); every field says what it does.
REFERENCE is the study's recipe and the only place its values are written: the command line's
defaults, `factgpt reproduce`'s budgets, the demo and `factgpt bench` are REFERENCE or a
`dataclasses.replace` of it. This module imports no torch, so `factgpt --help` can read it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from factgpt.errors import FactgptError

BLOCK_SIZE = 128  # the study's context length, fixed in the reference run.py
PERCEIVER_M = 64  # the perceiver's latent length m (the reference's perceiver commands use 64)
# the model's shape fields a command may set and a checkpoint it reads must then match
SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "bottleneck_dim")


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
    # How the model computes, a choice of the run that changes no parameter (TrainConfig.engine,
    # `--engine`): "fast" (fused attention, fast dropout masks) or "reference" (the reference's
    # explicit masked softmax and torch's dropout masks, kept to measure against and to prove both agree).
    engine: Literal["fast", "reference"] = "fast"

    def __post_init__(self) -> None:
        # a checkpoint's header is JSON that may have been edited: the types are checked too
        sizes = {k: getattr(self, k) for k in ("n_layer", "n_head", "n_embd", "vocab_size", "block_size")}
        if any(type(v) is not int for v in sizes.values()):
            raise FactgptError(f"n_layer, n_head, n_embd, vocab_size and block_size must be integers: {sizes}")
        for name in ("embd_pdrop", "resid_pdrop", "attn_pdrop"):
            p = getattr(self, name)
            if type(p) not in (int, float) or not 0 <= p < 1:
                raise FactgptError(f"{name} must be a number in [0, 1), not {p!r}")
        if self.engine not in ("fast", "reference"):
            raise FactgptError(f"engine must be fast or reference, not {self.engine!r}")
        if min(self.n_layer, self.n_head, self.n_embd, self.vocab_size, self.block_size) < 1:  # before n_embd % n_head
            raise FactgptError("n_layer, n_head, n_embd, vocab_size and block_size must be positive")
        if self.n_embd % self.n_head:
            raise FactgptError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.perceiver and not (self.bottleneck_dim and 0 < self.bottleneck_dim <= self.block_size):
            raise FactgptError(f"the perceiver variant needs 0 < bottleneck_dim <= {self.block_size}")
        if self.perceiver and self.n_layer < 2:
            raise FactgptError("the perceiver variant needs n_layer >= 2 (down and up blocks)")
        if not self.perceiver:
            self.bottleneck_dim = None

    @property
    def variant(self) -> str:
        return "perceiver" if self.perceiver else "vanilla"

    def identity(self) -> dict:
        """The fields that decide the parameters' shapes and meaning (what a checkpoint pins)."""
        d = asdict(self)
        d.pop("engine")
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
    # reference arithmetic; "bf16": autocast where supported (GPUs, AVX512 CPUs), fp32 elsewhere (the
    # records name what ran).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # How the fast engine lays out a batch: "grouped" (examples of similar length together, each
    # group trimmed to its longest) or "packed" (several examples per row, block-diagonal mask).
    layout: Literal["grouped", "packed"] = "grouped"
    group_tokens: int = 4096  # ids per group of the grouped layout (rows x trimmed length)
    # How the fast engine trains. "fused": on a CPU factgpt's fused kernels (factgpt.kernels:
    # attention over the live entries of packed rows only, its dropout drawn inside, dropout masks
    # never stored), on a GPU torch's fused attention with its in-kernel dropout; "torch": torch's
    # operations (the explicit softmax, keep_mask's masks). Where the kernels cannot be built the run
    # trains with torch's and says why. The same distribution in other draws than "torch".
    kernels: Literal["fused", "torch"] = "fused"
    # Examples in a new seeded order every epoch instead of file order (the reference's order).
    # Multi-process runs shuffle: each global batch is then split across the processes.
    shuffle: bool = False
    compile: bool = False  # torch.compile the model (falls back to eager where it cannot compile)
    log_every: int = 1  # write TensorBoard scalars every this many steps
    # A regular expression of parameter names this stage leaves as they are (no gradient, no
    # optimiser state, no decay); "": train every parameter, as the reference does.
    frozen: str = ""
    # Late dropout: the first this many epochs run with every dropout at 0, the rest at the model's
    # own rate; 0: the model's rate from the first step, as the reference.
    dropout_start_epoch: int = 0
    extra: dict = field(default_factory=dict)  # free-form notes carried into checkpoints


def json_roundtrip(d: dict) -> dict:
    """`d` as it reads back from a JSON record (tuples become lists), for comparing with one."""
    return json.loads(json.dumps(d))


# Steps between resume points of a training stage (pretrain, finetune, reproduce): an interrupted
# stage loses at most this many (about 8 minutes of `fast` on 2 AVX2 cores, 3 on AVX512-BF16 ones).
CHECKPOINT_EVERY = 200

# TrainConfig fields that say how a stage runs, not what it computes (the examples, their order and
# the schedule are the same): a stage record or a resume point written with other values still counts.
LAYOUT_FIELDS = ("layout", "group_tokens", "log_every", "compile", "kernels")


def with_layout(tconf: TrainConfig, **layout) -> TrainConfig:
    """`tconf` with LAYOUT_FIELDS replaced (None leaves a field as it is). A group size asks for
    groups, so it makes a stage that packs by default (vanilla pretraining) grouped unless `layout`
    names the layout itself."""
    layout = {k: v for k, v in layout.items() if v is not None}
    if "group_tokens" in layout:
        layout.setdefault("layout", "grouped")
    return replace(tconf, **layout)


def train_defaults() -> dict:
    """Every TrainConfig setting at its default, as a JSON record reads back: what a record written
    before a setting existed ran with (stage records and resume points are completed from it)."""
    return json_roundtrip(asdict(TrainConfig(max_epochs=0, batch_size=0, learning_rate=0.0)))


def same_training(recorded: dict, mine: dict) -> bool:
    """Whether a recorded TrainConfig (a stage record's or a resume point's, as its JSON reads back)
    computes what `mine` does. A record written before a setting existed lacks it (it then had its
    default) and may spell `engine` as `path`; the batch layout (LAYOUT_FIELDS) may differ."""
    recorded = dict(recorded)
    if "path" in recorded:  # written before TrainConfig.path was named engine
        recorded["engine"] = recorded.pop("path")
    defaults = train_defaults()
    recorded = {**{k: defaults[k] for k in mine if k not in recorded}, **recorded}
    return ({k: v for k, v in recorded.items() if k not in LAYOUT_FIELDS}
            == {k: v for k, v in mine.items() if k not in LAYOUT_FIELDS})


def final_tokens_for(n_pretrain_docs: int, block_size: int = BLOCK_SIZE) -> int:
    """The reference's final_tokens: 200 * len(pretraining dataset) * block_size."""
    return 200 * n_pretrain_docs * block_size


@dataclass(frozen=True)
class Corruption:
    """The span corruption's parameters; the defaults are the reference's."""
    min_truncation: int = 4  # shortest truncated length of a document
    max_truncation: int | None = None  # longest; None: int(block_size * 7 / 8), the reference's 112
    # the masked length is uniform over [1, round(n * mask_fraction) - 1] for a truncated length n
    # (the reference: 1/2, so a quarter of the document on average)
    mask_fraction: float = 0.5


REFERENCE_CORRUPTION = Corruption()


@dataclass(frozen=True)
class Pretraining:
    """What span-corruption pretraining chooses. Each field is named as the TrainConfig field it
    becomes (and as the flag that sets it, where the reference's flags do not name it otherwise)."""
    max_epochs: int = 650  # passes over the corpus
    batch_size: int = 128  # examples per optimiser step
    learning_rate: float = 6e-3  # peak rate (flag: --pretrain_lr, the reference's name)
    # the cosine reaches its floor after this many epochs' tokens (reference: 200 of 650; past it the
    # reference's multiplier rises again), scaled with a shorter perceiver pretraining
    final_epochs: float = 200.0
    final_tokens: int | None = None  # or after exactly this many tokens (None: final_epochs decides)
    weight_decay: float = TrainConfig.weight_decay  # AdamW decay (reference: 0.1)
    shuffle: bool = TrainConfig.shuffle  # a new example order every epoch (reference: file order)
    dropout_start_epoch: int = 0  # epochs without dropout before the recipe's dropout applies (late dropout)
    perceiver_epochs: int | None = None  # the perceiver's own number of epochs (None: max_epochs)
    corruption: Corruption = REFERENCE_CORRUPTION  # span-corruption parameters (reference: the defaults)
    # mix the finetuning pairs into pretraining (`mixed`), all but the probe's held-out people
    mix_pairs: bool = False
    probe_every: int = 0  # epochs between knowledge probes (0: none)


@dataclass(frozen=True)
class Finetuning:
    """What finetuning on question/answer pairs chooses; fields named as in TrainConfig."""
    max_epochs: int = 10  # after pretraining
    max_epochs_scratch: int = 75  # without pretraining (the same flag, --max_epochs, sets both)
    batch_size: int = 256  # examples per optimiser step
    learning_rate: float = 6e-4  # peak rate (flag: --finetune_lr, the reference's name)
    # None: the reference's, which the pretraining corpus sets (200 epochs' tokens of it) for both stages
    final_tokens: int | None = None
    weight_decay: float = TrainConfig.weight_decay  # AdamW decay (every named recipe: the reference's)
    shuffle: bool = TrainConfig.shuffle  # a new example order every epoch (reference: file order)
    # parameters whose names match this regular expression stay as pretrained ("mlp|emb": the MLPs
    # and both embeddings); "": none, the reference. From scratch nothing is pretrained: unused.
    frozen: str = ""


@dataclass(frozen=True)
class Recipe:
    """Model and optimisation for one table: what a run of the study chooses. REFERENCE is the
    reference recipe; the model's defaults are GPTConfig's, the stages' Pretraining's and Finetuning's."""
    name: str
    n_layer: int = GPTConfig.n_layer
    n_head: int = GPTConfig.n_head
    n_embd: int = GPTConfig.n_embd
    dropout: float = GPTConfig.embd_pdrop  # all three dropouts (GPTConfig's *_pdrop)
    bottleneck_dim: int = PERCEIVER_M  # the perceiver's m (the vanilla model has none)
    # both stages: bf16 where native (the records say which ran), else fp32
    precision: Literal["auto", "fp32", "bf16"] = TrainConfig.precision
    pretrain: Pretraining = Pretraining()
    finetune: Finetuning = Finetuning()

    def model_config(self, vocab_size: int, perceiver: bool) -> GPTConfig:
        d = self.dropout
        return GPTConfig(vocab_size=vocab_size, block_size=BLOCK_SIZE, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, embd_pdrop=d, resid_pdrop=d,
                         attn_pdrop=d, perceiver=perceiver,
                         bottleneck_dim=self.bottleneck_dim if perceiver else None)

    def pretrain_epochs_of(self, perceiver: bool) -> int:
        p = self.pretrain
        return p.perceiver_epochs if perceiver and p.perceiver_epochs else p.max_epochs

    def pretrain_config(self, n_pretrain_docs: int, seed: int, perceiver: bool = False,
                        n_mixed_pairs: int = 0) -> TrainConfig:
        """Pretraining on a corpus of `n_pretrain_docs` documents, with `n_mixed_pairs` finetuning
        pairs mixed into every epoch (`mix_pairs`). The cosine reaches its floor after
        `final_epochs` epochs' tokens, pairs included (counting documents alone would end a mixed
        run's cosine early, and the reference's cosine then rises again), scaled with a shorter
        perceiver pretraining."""
        p = self.pretrain
        epochs = self.pretrain_epochs_of(perceiver)
        per_epoch = n_pretrain_docs + n_mixed_pairs  # examples an epoch shows
        final = p.final_tokens or int(p.final_epochs * epochs / p.max_epochs * per_epoch * BLOCK_SIZE)
        # Vanilla pretraining packs its rows: 5-9% faster than groups of 4096 in bf16 on AVX512-BF16
        # cores and about 6% in fp32 on AVX2 ones, the same arithmetic (docs/speed.md). The perceiver
        # cannot pack (latent i reads input positions <= i, so each row starts one example), and
        # finetuning's short questions run faster grouped, so both keep groups.
        return TrainConfig(max_epochs=epochs, batch_size=p.batch_size, learning_rate=p.learning_rate,
                           final_tokens=final, seed=seed, precision=self.precision,
                           weight_decay=p.weight_decay, shuffle=p.shuffle,
                           layout="grouped" if perceiver else "packed",
                           dropout_start_epoch=round(p.dropout_start_epoch * epochs / p.max_epochs))

    def finetune_config(self, n_pretrain_docs: int, pretrained: bool, seed: int) -> TrainConfig:
        """Finetuning, after pretraining or from scratch; final_tokens is the reference's, set by the
        pretraining corpus for both stages, unless the recipe gives its own."""
        f = self.finetune
        return TrainConfig(max_epochs=f.max_epochs if pretrained else f.max_epochs_scratch,
                           batch_size=f.batch_size, learning_rate=f.learning_rate,
                           final_tokens=f.final_tokens or final_tokens_for(n_pretrain_docs), seed=seed,
                           precision=self.precision, weight_decay=f.weight_decay, shuffle=f.shuffle,
                           frozen=f.frozen if pretrained else "")  # nothing to keep from scratch


def field_of(obj, path: str):
    """The value at a dotted `path` of nested dataclasses: field_of(recipe, "pretrain.batch_size")."""
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


def with_fields(obj, values: dict[str, object]):
    """`obj` with the fields at dotted paths replaced, nested frozen dataclasses included:
    with_fields(recipe, {"pretrain.batch_size": 64, "n_layer": 2})."""
    nested: dict[str, dict[str, object]] = {}
    own = {}
    for path, value in values.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            own[head] = value
    own.update({head: with_fields(getattr(obj, head), sub) for head, sub in nested.items()})
    return replace(obj, **own)


REFERENCE = Recipe("full")  # the reference recipe (`factgpt reproduce --budget full`)
