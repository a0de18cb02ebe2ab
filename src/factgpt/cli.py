"""The `factgpt` command. Parses, validates, calls one library function per command, prints.

This is the only module that prints for the user and chooses exit codes: a FactgptError becomes
one line on stderr (`factgpt: error: FILE:LINE: problem (hint)`) and exit code 1; a usage error
exits 2 (argparse); Ctrl-C exits 130.

The study's commands keep the reference's spelling, so `python src/run.py ARGS` becomes
`factgpt ARGS`:

    factgpt pretrain vanilla wiki.txt --writing_params_path vanilla.pretrain.params
    factgpt finetune vanilla wiki.txt --reading_params_path vanilla.pretrain.params \\
        --writing_params_path vanilla.finetune.params --finetune_corpus_path birth_places_train.tsv
    factgpt evaluate vanilla wiki.txt --reading_params_path vanilla.finetune.params \\
        --eval_corpus_path birth_dev.tsv --outputs_path vanilla.pretrain.dev.predictions
    factgpt london birth_dev.tsv
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from factgpt.config import (  # no torch
    BLOCK_SIZE,
    CHECKPOINT_EVERY,
    REFERENCE,
    SHAPE_FIELDS,
    Recipe,
    TrainConfig,
    with_layout,
)
from factgpt.errors import FactgptError
from factgpt.recipes import BUDGET_ABOUT, BUDGETS, DEMO, DEMO_TINY  # no torch

if TYPE_CHECKING:  # torch and the library load on first use, so that `--help` is quick
    import torch

    from factgpt.stages import ModelSpec, TrainOutcome

VARIANTS = ("vanilla", "perceiver")


THREADS_HELP = "CPU threads for torch (default: torch's choice); main() sets them before the command runs"
GROUP_TOKENS_HELP = ("lay the fast engine's batches out in length-sorted groups of this many ids (default: packed "
                     f"rows for vanilla pretraining, groups of {TrainConfig.group_tokens} elsewhere); larger groups "
                     "mean fewer, larger kernel launches, which suits a GPU; the same arithmetic (with dropout, "
                     "the same distribution in other draws)")


def _bounded(kind: type, name: str, ok, says: str):
    """An argparse type: `kind(text)`, refused in one line unless `ok(value)`."""
    def parse(text: str):
        value = kind(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text} is not {says}")
        return value
    parse.__name__ = f"{name} {kind.__name__}"  # what argparse's message calls the type
    return parse


def positive(kind: type):
    """A number above 0 (a 0 would otherwise pass for "not given", or divide by zero later)."""
    return _bounded(kind, "positive", lambda v: v > 0, "above 0")


def non_negative(kind: type):
    """A number of 0 or more (0 means "never" for the every-N flags)."""
    return _bounded(kind, "non-negative", lambda v: v >= 0, "0 or more")


# a dropout probability: torch refuses p outside [0, 1], and p = 1 would zero every activation
dropout_probability = _bounded(float, "dropout", lambda p: 0 <= p < 1, "in [0, 1)")


def _study_parser(sub, name: str, help: str) -> argparse.ArgumentParser:
    R, D = REFERENCE, _TRAINING_DEFAULTS  # the help texts say their values

    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("variant", choices=VARIANTS, help="vanilla GPT or the perceiver variant")
    p.add_argument("pretrain_corpus_path", help="the pretraining corpus (wiki.txt); it also fixes the vocabulary")
    p.add_argument("--reading_params_path", default=None, help="checkpoint to start from / evaluate")
    p.add_argument("--writing_params_path", default=None, help="where to write the trained checkpoint")
    p.add_argument("--finetune_corpus_path", default=None, help="question<TAB>answer TSV to finetune on")
    p.add_argument("--eval_corpus_path", default=None, help="TSV of questions (with or without answers)")
    p.add_argument("--outputs_path", default=None, help="where evaluate writes one prediction a line")
    # The recipe's flags default to None: the reference recipe (factgpt.config.REFERENCE) decides.
    p.add_argument("--pretrain_lr", type=positive(float), default=None,
                   help=f"pretraining learning rate ({R.pretrain_lr:g})")
    p.add_argument("--finetune_lr", type=positive(float), default=None,
                   help=f"finetuning learning rate ({R.finetune_lr:g})")
    p.add_argument("--finetune_frozen", default=None, metavar="REGEX",
                   help="finetuning from a checkpoint leaves the parameters whose names match this regular "
                   "expression as pretrained, e.g. 'mlp|emb' (default: none, as the reference)")
    p.add_argument("--bottleneck_dim", type=positive(int), default=None,
                   help=f"perceiver latent length m ({R.bottleneck_dim}; from a checkpoint: the checkpoint's)")
    p.add_argument("--tb_expt_name", default=None, help=f"TensorBoard run name (under --tb_dir; {D['tb_expt_name']})")
    g = p.add_argument_group("overrides (default: the reference recipe)")
    g.add_argument("--max_epochs", type=positive(int), default=None,
                   help=f"epochs (pretrain {R.pretrain_epochs}; finetune {R.finetune_epochs_scratch}, or "
                   f"{R.finetune_epochs} after pretraining)")
    g.add_argument("--batch_size", type=positive(int), default=None,
                   help=f"examples per step (pretrain {R.pretrain_batch}, finetune {R.finetune_batch})")
    g.add_argument("--final_tokens", type=positive(int), default=None,
                   help="tokens at which the cosine reaches its floor (reference: "
                   f"{R.pretrain_final_epochs:g} * documents * {BLOCK_SIZE})")
    g.add_argument("--save_every", type=non_negative(int), default=None,
                   help="also write the checkpoint every N epochs (0: only at the end)")
    g.add_argument("--checkpoint_every", type=non_negative(int), default=None,
                   help="write a resume point (model, optimizer, RNG, position) every N steps "
                   f"({D['checkpoint_every']}; 0: never)")
    g.add_argument("--resume", action="store_true",
                   help="continue from WRITING_PARAMS_PATH.resume if an interrupted run left one")
    g.add_argument("--n_layer", type=positive(int), default=None,
                   help=f"transformer blocks ({R.n_layer}; from a checkpoint: the checkpoint's)")
    g.add_argument("--n_head", type=positive(int), default=None,
                   help=f"attention heads ({R.n_head}; from a checkpoint: the checkpoint's)")
    g.add_argument("--n_embd", type=positive(int), default=None,
                   help=f"embedding width ({R.n_embd}; from a checkpoint: the checkpoint's)")
    g.add_argument("--seed", type=int, default=None, help=f"seed for init, dropout and corruption draws ({D['seed']})")
    g.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    g.add_argument("--engine", "--path", dest="engine", choices=("fast", "reference"), default="fast",
                   help="fast (packed or length-grouped batches, fused kernels, KV-cache decoding) or the reference's "
                   "computation; --path is its former name")
    g.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                   help=f"{R.precision} by default. auto: bf16 autocast where the hardware runs bf16 matmuls "
                   "natively, else fp32 (the reference engine: fp32); fp32: the reference arithmetic; bf16: autocast "
                   "where supported (GPUs, AVX512 CPUs), else fp32; the run reports which")
    g.add_argument("--threads", type=positive(int), default=None, help=THREADS_HELP)
    g.add_argument("--dropout", type=dropout_probability, default=None,
                   help=f"all three dropouts (reference: {R.dropout:g}; also replaces a checkpoint's)")
    g.add_argument("--dropout_start_epoch", type=non_negative(int), default=None,
                   help="pretrain: the first N epochs run without dropout, then --dropout applies (late "
                   f"dropout; reference: {R.pretrain_dropout_start}, dropout from the first step)")
    g.add_argument("--weight_decay", type=non_negative(float), default=None,
                   help=f"AdamW weight decay of the stage run (reference: {R.weight_decay:g})")
    k = p.add_argument_group("pretraining objective and knowledge probe")
    c = R.corruption
    k.add_argument("--min_truncation", type=int, default=None,
                   help=f"shortest truncation of a document in span corruption (reference: {c.min_truncation})")
    k.add_argument("--max_truncation", type=int, default=None,
                   help="longest truncation (reference and largest: 112, 7/8 of the block)")
    k.add_argument("--mask_fraction", type=float, default=None,
                   help=f"masked span length uniform over [1, round(n * f) - 1] (reference: {c.mask_fraction:g})")
    k.add_argument("--mix_pairs", action="store_true",
                   help="pretrain: mix the --finetune_corpus_path pairs, all but its last (held-out) lines, "
                   "into the corpus (the `mixed` recipe)")
    k.add_argument("--probe_every", type=non_negative(int), default=None,
                   help="pretrain: every N epochs, the share of held-out people (the last 200 lines of "
                   f"--finetune_corpus_path) whose own line the model completes with their birthplace "
                   f"({R.probe_every}: never)")
    g.add_argument("--shuffle", action="store_true",
                   help="a new seeded example order every epoch (the reference keeps file order; torchrun shuffles)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (eager where no compiler)")
    g.add_argument("--group_tokens", type=positive(int), default=None, help=GROUP_TOKENS_HELP)
    g.add_argument("--tb_dir", default=None, help=f"TensorBoard root folder ({D['tb_dir']}, as the reference)")
    g.add_argument("--no_tensorboard", action="store_true", help="write no TensorBoard logs")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="factgpt", description="How a small GPT learns facts from text and gives them back "
        "(CS224N a5 reproduction).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _study_parser(sub, "pretrain", "span-corruption pretraining on the corpus")
    _study_parser(sub, "finetune", "finetune on question/answer pairs")
    _study_parser(sub, "evaluate", "greedy answers for a question file, and their accuracy")

    p = sub.add_parser("london", help="the always-London baseline on a labelled TSV")
    p.add_argument("eval_corpus_path", help="question<TAB>answer TSV (birth_dev.tsv)")

    p = sub.add_parser("bench", help="reference path vs fast path: training and decoding speed, one run")
    p.add_argument("--data-dir", default="data", help="folder with the study's four files (data)")
    p.add_argument("--steps", type=positive(int), default=4, help="timed optimiser steps per path (4)")
    p.add_argument("--params", default=None, help="checkpoint to decode with (default: untrained model)")
    p.add_argument("--decode-sample", type=positive(int), default=20, help="questions decoded one at a time (20)")
    p.add_argument("--device", default="cpu", help="cpu (the default: the figures in docs/benchmarks.md), cuda")
    p.add_argument("--group_tokens", type=positive(int), default=None,
                   help="also time the default fast path grouped, in groups of this many ids (e.g. 16384: one "
                   "group per pretraining batch, fewer kernel launches on a GPU)")
    p.add_argument("--threads", type=positive(int), default=None, help=THREADS_HELP)

    p = sub.add_parser("demo", help="the study's table on a generated world of fictional biographies (minutes)")
    p.add_argument("--out", default="demo_out", help="folder for the world, checkpoints and report (demo_out)")
    p.add_argument("--seed", type=int, default=0, help="seed of the world and of training (0)")
    p.add_argument("--people", type=_bounded(int, "people", lambda v: 4 <= v <= 10_000, "between 4 and 10,000"),
                   default=None, help="people in the world, a quarter of them held out (100; --tiny: 20)")
    p.add_argument("--pretrain_epochs", type=positive(int), default=None,
                   help="pretraining epochs (80; perceiver: half)")
    p.add_argument("--tiny", action="store_true", help="a seconds-long run that checks the plumbing")
    p.add_argument("--threads", type=positive(int), default=None, help=THREADS_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("reproduce", help="the study's table on the real data, stage by stage, with a report")
    p.add_argument("--data-dir", default="data", help="folder with the four files (`factgpt data download`)")
    p.add_argument("--out", default="reproduce_out", help="report folder (reproduce_out)")
    p.add_argument("--budget", choices=tuple(BUDGETS), default="full",
                   help="; ".join(f"{name}: {about}" for name, about in BUDGET_ABOUT.items()))
    p.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                   help="run only these rows: baseline vanilla_nopretrain vanilla_pretrain perceiver_pretrain "
                   "(default: all)")
    p.add_argument("--seeds", type=positive(int), default=1, help="repeat each trained stage over K seeds (1)")
    p.add_argument("--first_seed", type=non_negative(int), default=0,
                   help="the first of those seeds (0): two processes can run seeds 0 and 1 side by side")
    p.add_argument("--probe_every", type=non_negative(int), default=None,
                   help="run the knowledge probe every N pretraining epochs (default: the budget's; full: never)")
    p.add_argument("--checkpoint_every", type=non_negative(int), default=CHECKPOINT_EVERY,
                   help="steps between resume points of a training stage; an interrupted stage continues "
                   f"from its last one ({CHECKPOINT_EVERY})")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--group_tokens", type=positive(int), default=None, help=GROUP_TOKENS_HELP)
    p.add_argument("--threads", type=positive(int), default=None, help=THREADS_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("attention-lab", help="the attention-exploration answers, measured, checked and drawn")
    p.add_argument("--out", default="attention_lab", help="folder for report.md and the figures (attention_lab)")
    p.add_argument("--seed", type=int, default=0, help="seed of keys, values and samples (0)")
    p.add_argument("--samples", type=positive(int), default=2000, help="sampled key sets for (c) and (d) (2000)")

    p = sub.add_parser("ask", help="where was someone born: the greedy answer and the top-k with probabilities")
    p.add_argument("params", help="checkpoint (factgpt, or a reference .params with --pretrain_corpus)")
    p.add_argument("question", nargs="?", default=None, help='"Where was NAME born?" (none: ask interactively)')
    p.add_argument("--pretrain_corpus", default=None, help="corpus giving the vocabulary of a reference checkpoint")
    p.add_argument("--k", type=positive(int), default=5, help="answers to list (5)")
    p.add_argument("--n_head", type=positive(int), default=8, help="heads of a reference checkpoint (8)")

    p = sub.add_parser("sample", help="continue a prompt, or fill a span `prefix⁇suffix⁇`")
    p.add_argument("params", help="checkpoint (factgpt, or a reference .params with --pretrain_corpus)")
    p.add_argument("--prompt", required=True, help="text to continue; `prefix⁇suffix⁇` asks for the missing span")
    p.add_argument("--steps", type=positive(int), default=64, help="characters to generate (64)")
    p.add_argument("--temperature", type=positive(float), default=None,
                   help="sample at this temperature (default: greedy)")
    p.add_argument("--top_k", type=positive(int), default=None, help="sample among the k most likely characters")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling (0)")
    p.add_argument("--pretrain_corpus", default=None, help="corpus giving the vocabulary of a reference checkpoint")
    p.add_argument("--n_head", type=positive(int), default=8, help="heads of a reference checkpoint (8)")

    p = sub.add_parser("analyze", help="sort predictions into error categories; the similar-name test")
    p.add_argument("--predictions", required=True, help="one prediction a line (from `factgpt evaluate`)")
    p.add_argument("--eval_corpus_path", required=True, help="the labelled questions they answer")
    p.add_argument("--pretrain_corpus", required=True, help="the pretraining corpus (wiki.txt)")
    p.add_argument("--finetune_corpus_path", default=None, help="the finetuning TSV (similar names, prior answers)")
    p.add_argument("--params", default=None, help="the checkpoint that made them: adds a calibration table")
    p.add_argument("--out", default=None, help="folder for summary.md, categories.tsv and categories.png")

    p = sub.add_parser("data", help="the study's data files")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    d = dsub.add_parser("download", help="fetch the four files and check their SHA-256 sums")
    d.add_argument("--dest", default="data", help="folder to write into (data)")
    d.add_argument("--base-url", default=None, help="where the files are (default: the public copy)")
    return parser


def _writer(args, recipe: Recipe, function: str):
    """The TensorBoard writer as a context (closed, so flushed, when training ends), or None in one
    (`--no_tensorboard`)."""
    if args.no_tensorboard:
        return contextlib.nullcontext()
    from torch.utils.tensorboard import SummaryWriter
    name = "%s_%s_%d_pt_lr_%f_ft_lr_%f" % (training_flag(args, "tb_expt_name"), args.variant,
                                           recipe.bottleneck_dim, recipe.pretrain_lr, recipe.finetune_lr)
    log_dir = Path(training_flag(args, "tb_dir")) / function / name
    try:
        return SummaryWriter(log_dir=str(log_dir))
    except OSError as e:  # a read-only folder, or a file where --tb_dir names a folder
        raise FactgptError(f"cannot write TensorBoard logs: {e.strerror or e}", path=log_dir,
                           hint="give another --tb_dir, or --no_tensorboard") from None


def _require(args, *names: str) -> None:
    for n in names:
        if getattr(args, n) is None:
            raise FactgptError(f"`factgpt {args.command}` needs --{n}")


# Flags of the shared study parser that only training reads. They default to None so that a command
# which has no use for them can tell they were given; pretrain and finetune read them through
# `training_flag`, which gives these values where a flag was not given.
_TRAINING_DEFAULTS = {"seed": 0, "save_every": 0, "checkpoint_every": CHECKPOINT_EVERY, "tb_expt_name": "run",
                      "tb_dir": "expt"}

# Flags of the shared study parser that a command has no use for: given, they are refused rather
# than ignored. Pretraining and finetuning keep their own stage's settings.
_CORRUPTION_FLAGS = ("min_truncation", "max_truncation", "mask_fraction")
_PRETRAIN_ONLY = ("pretrain_lr", "mix_pairs", "probe_every", "dropout_start_epoch", *_CORRUPTION_FLAGS)
_EVALUATE_ONLY = ("eval_corpus_path", "outputs_path")  # training writes no predictions
# Both learning rates name the TensorBoard run (as the reference's run.py does), so both are taken.
NOT_FOR = {
    "pretrain": ("finetune_frozen", *_EVALUATE_ONLY),
    "finetune": ("mix_pairs", "probe_every", "dropout_start_epoch", *_CORRUPTION_FLAGS, *_EVALUATE_ONLY),
    "evaluate": (*_PRETRAIN_ONLY, "finetune_lr", "finetune_frozen", "max_epochs", "batch_size", "final_tokens",
                 "weight_decay", "dropout", "writing_params_path", "shuffle", "resume", "precision",
                 "group_tokens", "compile", "finetune_corpus_path", *_TRAINING_DEFAULTS),
}


def training_flag(args, name: str):
    """A flag only training reads: its value, or its documented default when not given."""
    value = getattr(args, name)
    return _TRAINING_DEFAULTS[name] if value is None else value


def _refuse_unused(args) -> None:
    for n in NOT_FOR.get(args.command, ()):
        value = getattr(args, n)
        if value is not None and value is not False:  # a 0 was given
            raise FactgptError(f"`factgpt {args.command}` has no use for --{n}", hint="leave it out")


def recipe_of(args) -> Recipe:
    """The reference recipe with the recipe flags given to pretrain, finetune or evaluate.
    --max_epochs, --batch_size and --weight_decay set the stage the command runs."""
    stage = (dict(pretrain_epochs=args.max_epochs, pretrain_batch=args.batch_size, weight_decay=args.weight_decay)
             if args.command == "pretrain" else
             dict(finetune_epochs=args.max_epochs, finetune_epochs_scratch=args.max_epochs,
                  finetune_batch=args.batch_size, finetune_weight_decay=args.weight_decay))
    given = dict(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout,
                 bottleneck_dim=args.bottleneck_dim, precision=args.precision, pretrain_lr=args.pretrain_lr,
                 finetune_lr=args.finetune_lr, finetune_frozen=args.finetune_frozen,
                 mix_pairs=args.mix_pairs or None, probe_every=args.probe_every,
                 pretrain_dropout_start=args.dropout_start_epoch,
                 **stage)
    corruption = dict(min_truncation=args.min_truncation, max_truncation=args.max_truncation,
                      mask_fraction=args.mask_fraction)
    corruption = {k: v for k, v in corruption.items() if v is not None}
    if corruption:
        given["corruption"] = replace(REFERENCE.corruption, **corruption)
    return replace(REFERENCE, **{k: v for k, v in given.items() if v is not None})


def train_config_of(args, recipe: Recipe, n_pretrain_docs: int, world: int = 1,
                    n_mixed_pairs: int = 0) -> TrainConfig:
    """The recipe's TrainConfig for the command's stage, with the run's own flags: --engine,
    --compile, --shuffle (torchrun always shuffles) and --final_tokens."""
    seed = training_flag(args, "seed")
    if args.command == "pretrain":
        tconf = recipe.pretrain_config(n_pretrain_docs, seed, perceiver=args.variant == "perceiver",
                                       n_mixed_pairs=n_mixed_pairs)
    else:
        tconf = recipe.finetune_config(n_pretrain_docs, args.reading_params_path is not None, seed)
    run = dict(engine=args.engine, compile=args.compile, shuffle=tconf.shuffle or args.shuffle or world > 1)
    if args.final_tokens is not None:
        run["final_tokens"] = args.final_tokens
    return with_layout(replace(tconf, **run), group_tokens=args.group_tokens)


@dataclass
class _Runtime:
    """What pretrain, finetune and evaluate set up alike from their flags."""
    device: torch.device
    world: int  # processes under torchrun (1 without)
    recipe: Recipe
    spec: ModelSpec
    progress: bool


def _runtime(args) -> _Runtime:
    """Device, the torchrun process group, the recipe and the model spec (main() set the threads)."""

    from factgpt.runtime import init_distributed, resolve_device
    from factgpt.stages import ModelSpec

    device = resolve_device(args.device)
    world, device = init_distributed(device)  # torchrun: one process per device, global batch split
    if world > 1 and args.command == "evaluate":
        raise FactgptError("evaluate runs in one process", hint="run it without torchrun")
    _refuse_unused(args)
    if args.engine == "reference" and (args.group_tokens is not None or args.compile):
        raise FactgptError("--group_tokens and --compile set the fast engine; `--engine reference` has no use for them",
                           hint="leave them out, or use the fast engine")
    recipe = recipe_of(args)
    # a checkpoint's shape is checked against the shape flags given; the others are the checkpoint's
    spec = ModelSpec(args.variant, recipe, pinned=tuple(f for f in SHAPE_FIELDS if getattr(args, f) is not None))
    return _Runtime(device, world, recipe, spec, progress=not args.quiet)


def _pretrain(args) -> int:
    from factgpt import stages

    rt = _runtime(args)
    r = rt.recipe
    _require(args, "writing_params_path")
    if r.mix_pairs or r.probe_every:
        _require(args, "finetune_corpus_path")
    elif args.finetune_corpus_path is not None:
        raise FactgptError("`factgpt pretrain` reads --finetune_corpus_path only with --mix_pairs or --probe_every",
                           hint="leave it out, or add one of them")
    corpus = stages.load_corpus(args.pretrain_corpus_path, corruption=r.corruption)
    pairs = stages.mixed_pairs(corpus, args.finetune_corpus_path) if r.mix_pairs else None
    tconf = train_config_of(args, r, len(corpus), rt.world, n_mixed_pairs=len(pairs) if pairs is not None else 0)
    if tconf.dropout_start_epoch >= tconf.max_epochs:
        raise FactgptError(f"--dropout_start_epoch {tconf.dropout_start_epoch} leaves none of the "
                           f"{tconf.max_epochs} epochs with dropout", hint="give a smaller one, or --dropout 0")
    with _writer(args, r, "pretrain") as writer:
        out = stages.pretrain(args.pretrain_corpus_path, rt.spec, tconf, args.writing_params_path,
                              device=rt.device, writer=writer, progress=rt.progress,
                              reading_params_path=args.reading_params_path,
                              save_every=training_flag(args, "save_every"),
                              checkpoint_every=training_flag(args, "checkpoint_every"), resume=args.resume,
                              corpus=corpus, pairs=pairs, probe_every=r.probe_every,
                              probe_path=args.finetune_corpus_path)
    return _trained(args, out)


def _finetune(args) -> int:
    from factgpt import stages

    rt = _runtime(args)
    _require(args, "writing_params_path", "finetune_corpus_path")
    if args.finetune_frozen and args.reading_params_path is None:
        raise FactgptError("--finetune_frozen keeps parameters as pretrained: it needs --reading_params_path",
                           hint="without a checkpoint every parameter starts at random and must train")
    corpus = stages.load_corpus(args.pretrain_corpus_path)
    tconf = train_config_of(args, rt.recipe, len(corpus), rt.world)
    with _writer(args, rt.recipe, "finetune") as writer:
        out = stages.finetune(args.pretrain_corpus_path, args.finetune_corpus_path, rt.spec, tconf,
                              args.writing_params_path, reading_params_path=args.reading_params_path,
                              device=rt.device, writer=writer, progress=rt.progress,
                              save_every=training_flag(args, "save_every"),
                              checkpoint_every=training_flag(args, "checkpoint_every"), resume=args.resume,
                              corpus=corpus)
    return _trained(args, out)


def _trained(args, out: TrainOutcome) -> int:
    """The one-line account of a finished training command (from the main process only)."""
    from factgpt.runtime import is_main_process

    st = out.state
    if not is_main_process():
        return 0
    if out.resumed_from is not None:
        print(f"resumed at step {out.resumed_from}", file=sys.stderr)
    if out.compile_fallback:
        print(f"note: torch.compile failed ({out.compile_fallback}); trained eagerly", file=sys.stderr)
    print(f"{args.command}: {st.epoch} epochs, {st.step} steps, {st.examples} examples in "
          f"{out.seconds:.1f} s ({st.tokens / max(out.seconds, 1e-9):,.0f} tokens/s counted as the "
          f"reference counts, {st.useful_tokens / max(out.seconds, 1e-9):,.0f} useful); final loss "
          f"{st.losses[-1]:.4f}; {out.precision}; wrote {out.params_path}")
    return 0


def _evaluate(args) -> int:
    from factgpt import stages
    from factgpt.evaluate import mistakes

    rt = _runtime(args)
    _require(args, "reading_params_path", "eval_corpus_path", "outputs_path")
    tqdm = None
    if rt.progress and args.engine == "reference":
        from tqdm.auto import tqdm
    ev = stages.evaluate(args.pretrain_corpus_path, args.reading_params_path, args.eval_corpus_path,
                         args.outputs_path, rt.spec, device=rt.device, engine=args.engine, progress=tqdm)
    if ev.score is None:
        print(f"Predictions written to {args.outputs_path}; {args.eval_corpus_path} has no "
              "answers, so no accuracy")
    else:
        print(ev.score.line())
        wrong = mistakes(ev.questions, ev.predictions, k=3)  # minGPT's quick look at what the model does
        if wrong:
            print("a few mistakes:\n" + "\n".join(f"  {w}" for w in wrong), file=sys.stderr)
    print(f"({len(ev.predictions)} questions in {ev.seconds:.2f} s)", file=sys.stderr)
    return 0


def _london(args) -> int:
    from factgpt.data import read_questions
    from factgpt.evaluate import score

    questions = read_questions(args.eval_corpus_path, require_answers=True)
    print(score(questions, ["London"] * len(questions)).line())
    return 0


def _data(args) -> int:
    from factgpt.download import BASE_URL, download

    written = download(args.dest, args.base_url or BASE_URL)
    print(f"{len(written)} file(s) written to {args.dest}; all four present with the right SHA-256")
    return 0


def _bench(args) -> int:
    from factgpt.lab.bench import FAST_VARIANTS, Variant, format_report, run_bench
    from factgpt.runtime import machine, resolve_device

    device = resolve_device(args.device)
    variants = FAST_VARIANTS
    if args.group_tokens is not None:
        variants += (Variant(f"default, groups of {args.group_tokens} ids", layout="grouped",
                             group_tokens=args.group_tokens),)
    result = run_bench(args.data_dir, steps=args.steps, params=args.params, device=device,
                       decode_sample=args.decode_sample, variants=variants, log=lambda m: print(m, file=sys.stderr))
    print(f"machine: {machine(device)}")
    print(format_report(result))
    return 0


def _table(args, run_args: dict, *, title: str, note, published, **table_kwargs) -> int:
    """The tail that demo and reproduce share: run (or resume) the table's stages, write the report,
    print the table. `note(run)` is the report's line on what was run; `run_args` go to TableRun.run."""
    from factgpt.report import format_table, summarize, write_report
    from factgpt.table import TableRun

    run = TableRun(progress=not args.quiet, log=lambda m: print(m, file=sys.stderr), **table_kwargs)
    summary = summarize(run.run(**run_args))
    report = write_report(run.out, summary, run.records, title=title, budget_note=note(run), published=published)
    print(format_table(summary, published))
    print(f"report: {report}", file=sys.stderr)
    return 0


def _demo(args) -> int:
    from factgpt.synthetic import make_world
    from factgpt.table import Files

    recipe, people = (DEMO_TINY, args.people or 20) if args.tiny else (DEMO, args.people or 100)
    if args.pretrain_epochs:  # another recipe: its name says so in the records and the report
        recipe = replace(recipe, name=f"{recipe.name}, {args.pretrain_epochs} pretraining epochs",
                         pretrain_epochs=args.pretrain_epochs, pretrain_final_epochs=args.pretrain_epochs,
                         perceiver_pretrain_epochs=max(1, args.pretrain_epochs // 2))
    world = make_world(n_people=people, heldout_fraction=0.25, mentions=3, seed=args.seed)
    out = Path(args.out)
    paths = world.write(out)
    print(f"world: {len(world.people)} people, {len(world.documents)} documents in {paths['corpus']}; "
          f"finetuning on {len(world.train)}, asking about {len(world.heldout)} held-out people "
          "whose birthplaces only the pretraining corpus tells", file=sys.stderr)
    return _table(args, {"seeds": 1, "first_seed": args.seed}, title="factgpt demo: a fictional world",
                  note=lambda run: f"Held-out accuracy on {len(world.heldout)} people seen only in pretraining "
                  f"(recipe `{recipe.name}`, seed {args.seed}).", published=None,
                  files=Files(paths["corpus"], paths["train"], paths["heldout"]), recipe=recipe, out=out)


def _reproduce(args) -> int:
    from factgpt.recipes import with_budget
    from factgpt.report import PUBLISHED, ROWS, budget_note
    from factgpt.runtime import resolve_device
    from factgpt.table import Files

    d = Path(args.data_dir)
    for name in ("wiki.txt", "birth_places_train.tsv", "birth_dev.tsv"):
        if not (d / name).is_file():
            raise FactgptError(f"{name} is missing", path=d, hint=f"run `factgpt data download --dest {d}`")
    extra = [d / "birth_test_inputs.tsv"] if (d / "birth_test_inputs.tsv").is_file() else []
    recipe = with_budget(args.budget, probe_every=args.probe_every)
    unknown = sorted(set(args.rows or ()) - set(ROWS))
    if unknown:
        raise FactgptError(f"--rows: no row named {', '.join(unknown)}", hint=f"rows: {' '.join(ROWS)}")
    twice = sorted({r for r in args.rows or () if args.rows.count(r) > 1})
    if twice:  # a row given twice would be counted as two seeds in the report
        raise FactgptError(f"--rows names {', '.join(twice)} more than once", hint="name each row once")
    return _table(args, {"seeds": args.seeds, "rows": args.rows or ROWS, "first_seed": args.first_seed},
                  title="factgpt reproduce: the study's table", published=PUBLISHED,
                  note=lambda run: budget_note(recipe, args.seeds, len(run.questions)),
                  files=Files(d / "wiki.txt", d / "birth_places_train.tsv", d / "birth_dev.tsv", extra),
                  recipe=recipe, out=args.out, device=resolve_device(args.device),
                  checkpoint_every=args.checkpoint_every,
                  layout={} if args.group_tokens is None else {"group_tokens": args.group_tokens})


def _attention_lab(args) -> int:
    from factgpt.lab.attention import format_checks, run_lab, write_figures, write_report
    from factgpt.outputs import ensure_folder

    out = ensure_folder(args.out)
    checks, data = run_lab(seed=args.seed, samples=args.samples)
    write_figures(data, out)
    report = write_report(checks, data, out)
    print(format_checks(checks))
    print(f"report: {report}", file=sys.stderr)
    return 0 if all(c.passed for c in checks) else 1


def _ask(args) -> int:
    from factgpt import stages
    from factgpt.data import Question
    from factgpt.evaluate import ANSWER_STEPS, predict
    from factgpt.lab.answers import answer_probability, rank_answers

    model, vocab = stages.load_for_inference(args.params, args.pretrain_corpus, n_head=args.n_head)

    def answer(question: str) -> None:
        greedy = predict(model, [Question(question, None, 1)], vocab)[0]
        print(f"greedy: {greedy}  (probability {answer_probability(model, vocab, question, greedy):.2%})")
        print("most probable answers (beam search):")
        for r in rank_answers(model, vocab, question, k=args.k, max_chars=ANSWER_STEPS):
            print(f"  {r.probability:7.2%}  {r.answer}")

    if args.question is not None:
        answer(args.question)
        return 0
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("question (empty to quit)> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line.strip():
            return 0
        try:
            answer(line.rstrip("\n"))
        except FactgptError as e:  # one bad question does not end the session
            print(f"factgpt: {e}", file=sys.stderr)


def _sample(args) -> int:
    import torch

    from factgpt import stages
    from factgpt.data import MASK_CHAR
    from factgpt.decode import generate_reference

    if not args.prompt:
        raise FactgptError("--prompt is empty", hint="give at least one character to continue")
    model, vocab = stages.load_for_inference(args.params, args.pretrain_corpus, n_head=args.n_head)
    if args.top_k is not None and args.top_k > len(vocab):
        raise FactgptError(f"--top_k {args.top_k} is more than the vocabulary's {len(vocab)} characters")
    prompt = vocab.encode(args.prompt, source="--prompt")
    sample = args.temperature is not None or args.top_k is not None
    g = torch.Generator().manual_seed(args.seed)
    out = generate_reference(model, prompt, args.steps, temperature=args.temperature or 1.0, top_k=args.top_k,
                             sample=sample, generator=g)
    text = vocab.decode(out)
    print(text)
    if args.prompt.count(MASK_CHAR) == 2 and args.prompt.endswith(MASK_CHAR):
        span = text[len(args.prompt):].split(MASK_CHAR)[0]
        print(f"filled span: {span!r}", file=sys.stderr)
    return 0


def _analyze(args) -> int:
    from factgpt import stages
    from factgpt.data import read_questions, read_text, split_lines
    from factgpt.lab.answers import analyze, answer_probability, summary_markdown, write_categories_tsv, write_chart
    from factgpt.outputs import atomic_write_text, ensure_folder

    questions = read_questions(args.eval_corpus_path, require_answers=True)
    preds = split_lines(read_text(args.predictions))
    if len(preds) != len(questions):
        raise FactgptError(f"{len(preds)} predictions for {len(questions)} questions in {args.eval_corpus_path}",
                           path=args.predictions, hint="one prediction a line, in the question file's order")
    finetune = read_questions(args.finetune_corpus_path, require_answers=True) if args.finetune_corpus_path else None
    confidences = None
    if args.params:
        model, vocab = stages.load_for_inference(args.params, args.pretrain_corpus)
        for i, (q, p) in enumerate(zip(questions, preds), start=1):  # a character the model lacks: name its line
            vocab.encode(q.question, source=args.eval_corpus_path, line=q.line)
            vocab.encode(p, source=args.predictions, line=i)
        confidences = [answer_probability(model, vocab, q.question, p) for q, p in zip(questions, preds)]
    a = analyze(questions, preds, read_text(args.pretrain_corpus), finetune, confidences=confidences)
    text = summary_markdown(a, title=f"Where the answers in {Path(args.predictions).name} come from")
    print(text)
    if args.out:
        out = ensure_folder(args.out)
        atomic_write_text(out / "summary.md", text)
        write_categories_tsv(a, out / "categories.tsv")
        write_chart(a, out / "categories.png")
    return 0


COMMANDS = {"pretrain": _pretrain, "finetune": _finetune, "evaluate": _evaluate, "london": _london,
            "data": _data, "bench": _bench, "demo": _demo,
            "reproduce": _reproduce, "attention-lab": _attention_lab, "ask": _ask, "sample": _sample,
            "analyze": _analyze}


def main(argv: list[str] | None = None) -> int:
    from factgpt.runtime import leave_distributed

    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None):  # every command that computes takes --threads
        import torch
        torch.set_num_threads(args.threads)
    try:
        code = COMMANDS[args.command](args)
    except FactgptError as e:
        print(f"factgpt: error: {e}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("factgpt: interrupted", file=sys.stderr)
        code = 130
    leave_distributed(code)  # under torchrun: exits here
    return code
