"""The training knobs, in one table: each knob's flag, the commands that take it, the recipe field it
sets and the stage value a table's command line shows for it.

Three things are made from KNOBS, so adding a knob touches this table and the code that uses it:
- each command's parser (`add_knobs`): a command lists and accepts only its own knobs;
- the flags-to-recipe mapping (`recipe_of`, `train_config_of`): a given flag replaces its recipe field,
  the reference recipe (factgpt.config.REFERENCE) decides the rest;
- a stage's command line (`stage_flags`), which `factgpt reproduce` records and which parses back
  into the same configs (tested).

A knob's name is its flag and, where the reference's flags do not name it otherwise, the name of the
field it sets (`--batch_size` sets `pretrain.batch_size` or `finetune.batch_size`, then
TrainConfig.batch_size). Like config.py, this module imports no torch, so `--help` is quick.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, replace

from factgpt.config import (
    BLOCK_SIZE,
    CHECKPOINT_EVERY,
    REFERENCE,
    Recipe,
    TrainConfig,
    field_of,
    with_fields,
    with_layout,
)

TRAINING = ("pretrain", "finetune")  # the stages that train (their recipe fields are `pretrain.*`, `finetune.*`)
STUDY = (*TRAINING, "evaluate")
COMPUTING = (*STUDY, "reproduce", "demo", "bench", "heldout")  # the commands that run a model


def _bounded(kind: type, name: str, ok: Callable, says: str) -> Callable[[str], object]:
    """An argparse type: `kind(text)`, refused in one line unless `ok(value)`."""
    def parse(text: str):
        value = kind(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text} is not {says}")
        return value
    parse.__name__ = f"{name} {kind.__name__}"  # what argparse's message calls the type
    return parse


def positive(kind: type) -> Callable[[str], object]:
    """A number above 0 (a 0 would otherwise pass for "not given", or divide by zero later)."""
    return _bounded(kind, "positive", lambda v: v > 0, "above 0")


def non_negative(kind: type) -> Callable[[str], object]:
    """A number of 0 or more (0 means "never" for the every-N flags)."""
    return _bounded(kind, "non-negative", lambda v: v >= 0, "0 or more")


# a dropout probability: torch refuses p outside [0, 1], and p = 1 would zero every activation
probability = _bounded(float, "dropout", lambda p: 0 <= p < 1, "in [0, 1)")


@dataclass(frozen=True)
class Knob:
    name: str  # the flag, --name (the other spelling, --na-me, is accepted too)
    commands: tuple[str, ...]  # the commands that take it
    help: str  # "{default}" is replaced by the value the command takes when the flag is left out
    type: Callable | None = None  # argparse type; None: a switch (given or not)
    # Recipe fields it sets, per command ("{stage}": the command's own stage); none: a setting of the
    # run, read from the parsed arguments by the code that uses it
    sets: dict[str, tuple[str, ...]] | str | None = None
    # the stage value a table's command line shows: "train.F" (the stage's TrainConfig), "model.F" (its
    # GPTConfig), "recipe.PATH"; None: never shown
    reads: dict[str, str] | str | None = None
    stages: tuple[str, ...] = TRAINING  # the stage commands whose recorded command lines carry it
    shown: bool = False  # always shown there (else only where the recipe differs from the reference's)
    default: object = None  # a run setting's default (a recipe field's default is the reference's)
    choices: tuple | None = None
    metavar: str | None = None
    group: str = "run"  # the --help section: "model", "optimisation", "objective", "run"

    def paths(self, command: str) -> tuple[str, ...]:
        """The recipe fields this knob sets for `command`."""
        if self.sets is None:
            return ()
        if isinstance(self.sets, str):
            return (self.sets.format(stage=command),)
        return self.sets.get(command, ())

    def source(self, command: str) -> str | None:
        return self.reads.get(command) if isinstance(self.reads, dict) else self.reads


def _stage(name: str) -> dict[str, tuple[str, ...]]:
    return {c: (f"{c}.{name}",) for c in TRAINING}


KNOBS: tuple[Knob, ...] = (
    # the model
    Knob("n_layer", STUDY, "transformer blocks ({default}; from a checkpoint: the checkpoint's)", positive(int),
         sets="n_layer", reads="model.n_layer", shown=True, group="model"),
    Knob("n_head", STUDY, "attention heads ({default}; from a checkpoint: the checkpoint's)", positive(int),
         sets="n_head", reads="model.n_head", shown=True, group="model"),
    Knob("n_embd", STUDY, "embedding width ({default}; from a checkpoint: the checkpoint's)", positive(int),
         sets="n_embd", reads="model.n_embd", shown=True, group="model"),
    Knob("bottleneck_dim", STUDY, "perceiver latent length m ({default}; from a checkpoint: the checkpoint's)",
         positive(int), sets="bottleneck_dim", reads="model.bottleneck_dim", stages=STUDY, shown=True,
         group="model"),
    Knob("dropout", TRAINING, "all three dropouts ({default}; also replaces a checkpoint's)", probability,
         sets="dropout", reads="recipe.dropout", shown=True, group="model"),
    # the optimisation of the command's stage
    Knob("max_epochs", TRAINING, "passes over the data ({default})", positive(int),
         sets={"pretrain": ("pretrain.max_epochs",),
               "finetune": ("finetune.max_epochs", "finetune.max_epochs_scratch")},
         reads="train.max_epochs", shown=True, group="optimisation"),
    Knob("batch_size", TRAINING, "examples per optimiser step ({default})", positive(int), sets=_stage("batch_size"),
         reads="train.batch_size", shown=True, group="optimisation"),
    Knob("pretrain_lr", ("pretrain",), "peak learning rate ({default})", positive(float),
         sets="pretrain.learning_rate", reads="train.learning_rate", stages=("pretrain",), shown=True,
         group="optimisation"),
    Knob("finetune_lr", ("finetune",), "peak learning rate ({default})", positive(float),
         sets="finetune.learning_rate", reads="train.learning_rate", stages=("finetune",), shown=True,
         group="optimisation"),
    Knob("final_tokens", TRAINING, "tokens at which the cosine reaches its floor (default: 200 epochs' tokens of "
         f"the pretraining corpus, 200 * documents * {BLOCK_SIZE}, as the reference)", positive(int),
         sets=_stage("final_tokens"), shown=True, group="optimisation",
         reads={"pretrain": "train.final_tokens", "finetune": "recipe.finetune.final_tokens"}),
    Knob("weight_decay", TRAINING, "AdamW weight decay ({default})", non_negative(float), sets=_stage("weight_decay"),
         reads="train.weight_decay", group="optimisation"),
    Knob("shuffle", TRAINING, "a new seeded example order every epoch (default: file order, as the reference; "
         "torchrun always shuffles)", sets=_stage("shuffle"), reads="train.shuffle", group="optimisation"),
    Knob("precision", TRAINING, "{default} by default. auto: bf16 autocast where the hardware runs bf16 matmuls "
         "natively, else fp32 (the reference engine: fp32); fp32: the reference arithmetic; bf16: autocast where "
         "supported (GPUs, AVX512 CPUs), else fp32; the run reports which", str, sets="precision",
         reads="train.precision", shown=True, choices=("auto", "fp32", "bf16"), group="optimisation"),
    Knob("seed", TRAINING, "seed of parameter init, dropout and the corruption draws ({default})", int,
         reads="train.seed", shown=True, default=0, group="optimisation"),
    Knob("dropout_start_epoch", ("pretrain",), "the first N epochs run without dropout, then --dropout applies "
         "(late dropout; {default}: dropout from the first step, as the reference)", non_negative(int),
         sets="pretrain.dropout_start_epoch", reads="train.dropout_start_epoch", stages=("pretrain",),
         group="optimisation"),
    Knob("finetune_frozen", ("finetune",), "finetuning from a checkpoint leaves the parameters whose names match "
         "this regular expression as pretrained, e.g. 'mlp|emb' (default: none, as the reference)", str,
         sets="finetune.frozen", reads="train.frozen", stages=("finetune",), metavar="REGEX",
         group="optimisation"),
    # the pretraining objective and the knowledge probe
    Knob("min_truncation", ("pretrain",), "shortest truncation of a document in span corruption ({default})",
         positive(int), sets="pretrain.corruption.min_truncation", reads="recipe.pretrain.corruption.min_truncation",
         stages=("pretrain",), group="objective"),
    Knob("max_truncation", ("pretrain",), "longest truncation (default and largest: 112, 7/8 of the block)",
         positive(int), sets="pretrain.corruption.max_truncation", reads="recipe.pretrain.corruption.max_truncation",
         stages=("pretrain",), group="objective"),
    Knob("mask_fraction", ("pretrain",), "masked span length uniform over [1, round(n * f) - 1] ({default})",
         float, sets="pretrain.corruption.mask_fraction", reads="recipe.pretrain.corruption.mask_fraction",
         stages=("pretrain",), group="objective"),
    Knob("mix_pairs", ("pretrain",), "mix the --finetune_corpus_path pairs, all but its last (held-out) lines, "
         "into the corpus (the `mixed` recipe)", sets="pretrain.mix_pairs", reads="recipe.pretrain.mix_pairs",
         stages=("pretrain",), group="objective"),
    Knob("probe_every", ("pretrain", "reproduce"), "every N pretraining epochs, the share of held-out people (the "
         "last 200 lines of the finetuning pairs) whose own line the model completes with their birthplace "
         "(default: {default}; 0: never)", non_negative(int), sets="pretrain.probe_every",
         reads="recipe.pretrain.probe_every", stages=("pretrain",), group="objective"),
    # how the run computes and what it writes, not what it trains
    Knob("engine", STUDY, "fast (packed or length-grouped batches, fused kernels, KV-cache decoding) or the "
         "reference's computation ({default})", str, default="fast", choices=("fast", "reference")),
    Knob("device", COMPUTING, "auto (CUDA when present, else Apple's GPU, else CPU), cpu, cuda, cuda:N or mps "
         "({default})", str, default="auto"),
    Knob("threads", COMPUTING, "CPU threads for torch (default: torch's choice)", positive(int)),
    Knob("kernels", (*TRAINING, "reproduce"), "fused: the fast engine trains through factgpt's fused CPU kernels "
         "(attention over the live entries only, dropout drawn inside; torch's fused attention on a GPU); torch: "
         f"through torch's operations ({TrainConfig.kernels}; without a compiler the run uses torch's and says so)",
         str, choices=("fused", "torch")),
    Knob("compile", TRAINING, "torch.compile the model (eager where no compiler is found)"),
    Knob("group_tokens", (*TRAINING, "reproduce", "bench"), "lay the fast engine's batches out in length-sorted "
         f"groups of this many ids (default: packed rows for vanilla pretraining, groups of {TrainConfig.group_tokens} "
         "elsewhere); larger groups mean fewer, larger kernel launches, which suits a GPU", positive(int)),
    Knob("checkpoint_every", (*TRAINING, "reproduce"), "write a resume point (model, optimiser, RNG, position) "
         "every N steps ({default}; 0: never)", non_negative(int), default=CHECKPOINT_EVERY),
    Knob("save_every", TRAINING, "also write the checkpoint every N epochs ({default}: only at the end)",
         non_negative(int), default=0),
    Knob("resume", TRAINING, "continue from WRITING_PARAMS_PATH.resume, the resume point an interrupted run left"),
    Knob("restart", TRAINING, "start over, deleting the resume point an interrupted run left"),
    Knob("tb_dir", TRAINING, "TensorBoard root folder ({default}, as the reference); each run writes a "
         "folder of its own under it", str, default="expt"),
    Knob("tb_expt_name", TRAINING, "TensorBoard run name ({default})", str, default="run"),
    Knob("no_tensorboard", TRAINING, "write no TensorBoard logs"),
    Knob("quiet", (*STUDY, "reproduce", "demo"), "no progress bar or progress lines"),
)

GROUPS = {"model": "model (default: the reference recipe's)",
          "optimisation": "optimisation of this stage (default: the reference recipe's)",
          "objective": "pretraining objective and knowledge probe", "run": "how the run computes and what it writes"}


def knobs_of(command: str) -> list[Knob]:
    return [k for k in KNOBS if command in k.commands]


def add_knobs(parser: argparse.ArgumentParser, command: str) -> None:
    """The knobs `command` takes, as flags of its parser, in their --help sections."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for k in knobs_of(command):
        g = groups.get(k.group) or groups.setdefault(k.group, parser.add_argument_group(GROUPS[k.group]))
        default = _default_text(k, command)
        help_text = k.help.replace("{default}", default)
        if k.type is None:
            g.add_argument(f"--{k.name}", action="store_const", const=True, default=None if k.sets else False,
                           help=help_text)
        else:
            g.add_argument(f"--{k.name}", type=k.type, default=k.default, choices=k.choices, metavar=k.metavar,
                           help=help_text)


def _default_text(k: Knob, command: str) -> str:
    """What the command takes when the flag is left out, for its help."""
    paths = k.paths(command)
    if not paths:
        return str(k.default)
    if command == "finetune" and k.name == "max_epochs":
        f = REFERENCE.finetune
        return f"{f.max_epochs} after pretraining, {f.max_epochs_scratch} without"
    value = field_of(REFERENCE, paths[0])
    return f"{value:g}" if isinstance(value, float) else str(value)


def recipe_of(args: argparse.Namespace, command: str | None = None, base: Recipe = REFERENCE) -> Recipe:
    """`base` with every recipe knob given on the command line: each sets its fields for `command`
    (by default the command parsed, args.command)."""
    command = command or args.command
    values = {}
    for k in knobs_of(command):
        value = getattr(args, k.name, None)
        if value is not None:
            values.update({path: value for path in k.paths(command)})
    return with_fields(base, values)


def train_config_of(args: argparse.Namespace, recipe: Recipe, n_pretrain_docs: int, world: int = 1,
                    n_mixed_pairs: int = 0) -> TrainConfig:
    """The recipe's TrainConfig for the command's stage (pretrain, or finetune: after pretraining when
    a checkpoint is read), with the run's own settings: --seed, --engine, --compile, --group_tokens,
    and shuffling under torchrun (`world` processes)."""
    if args.command == "pretrain":
        tconf = recipe.pretrain_config(n_pretrain_docs, args.seed, perceiver=args.variant == "perceiver",
                                       n_mixed_pairs=n_mixed_pairs)
    else:
        tconf = recipe.finetune_config(n_pretrain_docs, args.reading_params_path is not None, args.seed)
    tconf = replace(tconf, engine=args.engine, compile=args.compile, shuffle=tconf.shuffle or world > 1)
    return with_layout(tconf, group_tokens=args.group_tokens, kernels=args.kernels)


def stage_flags(command: str, configs: dict[str, object], reference: dict[str, object]) -> list[str]:
    """The flags of a stage's command line: every knob the stage carries whose value is always shown
    or differs from the reference recipe's. `configs` and `reference`: {"train": TrainConfig,
    "model": GPTConfig, "recipe": Recipe} of the stage and of the same stage at the reference recipe."""
    flags = []
    for k in KNOBS:
        source = k.source(command)
        if command not in k.stages or source is None:
            continue
        where, _, path = source.partition(".")
        value, ref = field_of(configs[where], path), field_of(reference[where], path)
        if value is None or (value is False and k.type is None):
            continue
        if k.type is None:  # a switch: given when on
            flags.append(f"--{k.name}")
        elif k.shown or value != ref:
            flags += [f"--{k.name}", str(value)]
    return flags

