"""The `factgpt` command: parses, calls one library function per command, prints.

This is the only module of the study that prints for the user and chooses exit codes: a FactgptError
becomes one line on stderr (`factgpt: error: FILE:LINE: problem (hint)`) and exit code 1; a usage
error exits 2 (argparse, with a suggestion for a mistyped flag or command); Ctrl-C exits 130 and
says how to continue.

The study's commands keep the reference's spelling, so `python src/run.py ARGS` becomes
`factgpt ARGS`:

    factgpt pretrain vanilla wiki.txt --writing_params_path vanilla.pretrain.params
    factgpt finetune vanilla wiki.txt --reading_params_path vanilla.pretrain.params \\
        --writing_params_path vanilla.finetune.params --finetune_corpus_path birth_places_train.tsv
    factgpt evaluate vanilla wiki.txt --reading_params_path vanilla.finetune.params \\
        --eval_corpus_path birth_dev.tsv --outputs_path vanilla.pretrain.dev.predictions
    factgpt london birth_dev.tsv

Flags are spelt with underscores, as the reference's are; the same flag with hyphens is accepted.
The training knobs and their parsers come from factgpt.knobs. The instruments' commands (ask,
analyze, attention-lab, bench, heldout, sample) plug in through the `factgpt.commands` entry point
(factgpt.lab.commands), so the study never imports them.
"""

from __future__ import annotations

import argparse
import difflib
import shlex
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points, version
from pathlib import Path
from typing import TYPE_CHECKING

from factgpt import knobs
from factgpt.cmdline import Command, Parser, spelling
from factgpt.config import SHAPE_FIELDS, Recipe  # no torch
from factgpt.errors import FactgptError, Interrupted
from factgpt.knobs import non_negative, positive
from factgpt.recipes import BUDGET_ABOUT, BUDGETS, DEMO  # no torch

if TYPE_CHECKING:  # torch and the library load on first use, so that `--help` is quick
    import torch

    from factgpt.stages import ModelSpec, TrainOutcome

VARIANTS = ("vanilla", "perceiver")


# -- the study's commands ---------------------------------------------------------------------------

def _study_args(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("variant", choices=VARIANTS, help="vanilla GPT or the perceiver variant")
    p.add_argument("pretrain_corpus_path", help="the pretraining corpus (wiki.txt); it also fixes the vocabulary")
    reads = {"pretrain": "a checkpoint to continue pretraining from",
             "finetune": "the pretrained checkpoint to finetune (none: finetune from scratch)",
             "evaluate": "the checkpoint to evaluate"}
    p.add_argument("--reading_params_path", default=None, help=reads[command])
    if command in knobs.TRAINING:
        p.add_argument("--writing_params_path", default=None, help="where to write the trained checkpoint")
        p.add_argument("--finetune_corpus_path", default=None, help={
            "pretrain": "question<TAB>answer pairs, for --mix_pairs and --probe_every",
            "finetune": "question<TAB>answer pairs to finetune on"}[command])
    else:
        p.add_argument("--eval_corpus_path", default=None, help="TSV of questions (with or without answers)")
        p.add_argument("--outputs_path", default=None, help="where to write one prediction a line")
    knobs.add_knobs(p, command)


def _london_args(p) -> None:
    p.add_argument("eval_corpus_path", help="question<TAB>answer TSV (birth_dev.tsv)")


def _data_args(p) -> None:
    p.add_argument("action", choices=("download",), help="download: fetch the four files and check their SHA-256")
    p.add_argument("--dest", default="data", help="folder to write into (data)")
    p.add_argument("--base_url", default=None, help="where the files are (default: the public copy)")


def _reproduce_args(p) -> None:
    p.add_argument("--data_dir", default="data", help="folder with the four files (`factgpt data download`)")
    p.add_argument("--out", default="reproduce_out", help="report folder (reproduce_out)")
    p.add_argument("--budget", choices=tuple(BUDGETS), default="full",
                   help="; ".join(f"{name}: {about}" for name, about in BUDGET_ABOUT.items()))
    p.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                   help="run only these rows: baseline vanilla_nopretrain vanilla_pretrain perceiver_pretrain "
                   "(default: all)")
    p.add_argument("--seeds", type=positive(int), default=1, help="repeat each trained stage over K seeds (1)")
    p.add_argument("--first_seed", type=non_negative(int), default=0,
                   help="the first of those seeds (0): two processes can run seeds 0 and 1 side by side")
    knobs.add_knobs(p, "reproduce")


def _demo_args(p) -> None:
    p.add_argument("--out", default="demo_out", help="folder for the world, checkpoints and report (demo_out)")
    p.add_argument("--seed", type=int, default=0, help="seed of the world and of training (0)")
    p.add_argument("--people", type=knobs._bounded(int, "people", lambda v: 4 <= v <= 10_000, "between 4 and 10,000"),
                   default=None, help="people in the world, half of them held out (200; --tiny: 20)")
    p.add_argument("--pretrain_epochs", type=positive(int), default=None,
                   help=f"pretraining epochs of both variants (default: {DEMO.pretrain_epochs_of(False)}, "
                   f"the perceiver {DEMO.pretrain_epochs_of(True)})")
    p.add_argument("--tiny", action="store_true", help="a seconds-long run that checks the plumbing")
    knobs.add_knobs(p, "demo")


def _tensorboard(args, recipe: Recipe, function: str):
    """What opens the TensorBoard writer (`--no_tensorboard`: None): the reference's run name, the
    model's size, the seed and the start time name its folder, so runs never append to one another's."""
    if args.no_tensorboard:
        return None
    from factgpt.progress import tensorboard

    name = "%s_%s_%d_pt_lr_%f_ft_lr_%f" % (args.tb_expt_name, args.variant, recipe.bottleneck_dim,
                                           recipe.pretrain.learning_rate, recipe.finetune.learning_rate)
    return lambda: tensorboard(Path(args.tb_dir) / function, f"{name}_L{recipe.n_layer}_H{recipe.n_head}"
                               f"_E{recipe.n_embd}_seed{args.seed}")


def _require(args, *names: str) -> None:
    for n in names:
        if getattr(args, n) is None:
            raise FactgptError(f"`factgpt {args.command}` needs --{n}")


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
    fast_only = (getattr(args, "group_tokens", None) is not None or getattr(args, "compile", False)
                 or getattr(args, "kernels", None) == "fused")
    if args.engine == "reference" and fast_only:
        raise FactgptError("--group_tokens, --compile and --kernels fused set the fast engine; `--engine reference` "
                           "has no use for them", hint="leave them out, or use the fast engine")
    recipe = knobs.recipe_of(args)
    # a checkpoint's shape is checked against the shape flags given; the others are the checkpoint's
    spec = ModelSpec(args.variant, recipe, pinned=tuple(f for f in SHAPE_FIELDS if getattr(args, f) is not None))
    return _Runtime(device, world, recipe, spec, progress=not args.quiet)


def _training(args):
    """Checks every training command makes before it writes anything: the output, and a resume
    point an interrupted run left (continued only when asked, deleted only when asked)."""
    from factgpt import stages

    _require(args, "writing_params_path")
    if args.resume and args.restart:
        raise FactgptError("--resume continues the interrupted run and --restart deletes it: give one of them")
    stages.check_writable(args.writing_params_path)
    stages.resume_point(args.writing_params_path, resume=args.resume, restart=args.restart)
    return _runtime(args)


def _pretrain(args) -> int:
    from factgpt import stages

    rt = _training(args)
    p = rt.recipe.pretrain
    if p.mix_pairs or p.probe_every:
        _require(args, "finetune_corpus_path")
    elif args.finetune_corpus_path is not None:
        raise FactgptError("`factgpt pretrain` reads --finetune_corpus_path only with --mix_pairs or --probe_every",
                           hint="leave it out, or add one of them")
    corpus = stages.load_corpus(args.pretrain_corpus_path, corruption=p.corruption)
    pairs = stages.mixed_pairs(corpus, args.finetune_corpus_path) if p.mix_pairs else None
    tconf = knobs.train_config_of(args, rt.recipe, len(corpus), rt.world, n_mixed_pairs=len(pairs) if pairs else 0)
    if tconf.dropout_start_epoch >= tconf.max_epochs:
        raise FactgptError(f"--dropout_start_epoch {tconf.dropout_start_epoch} leaves none of the "
                           f"{tconf.max_epochs} epochs with dropout", hint="give a smaller one, or --dropout 0")
    out = stages.pretrain(args.pretrain_corpus_path, rt.spec, tconf, args.writing_params_path, device=rt.device,
                          tensorboard=_tensorboard(args, rt.recipe, "pretrain"), progress=rt.progress,
                          reading_params_path=args.reading_params_path, save_every=args.save_every,
                          checkpoint_every=args.checkpoint_every, resume=args.resume, corpus=corpus,
                          pairs=pairs, probe_every=p.probe_every, probe_path=args.finetune_corpus_path)
    return _trained(args, out)


def _finetune(args) -> int:
    from factgpt import stages

    rt = _training(args)
    _require(args, "finetune_corpus_path")
    if args.finetune_frozen and args.reading_params_path is None:
        raise FactgptError("--finetune_frozen keeps parameters as pretrained: it needs --reading_params_path",
                           hint="without a checkpoint every parameter starts at random and must train")
    corpus = stages.load_corpus(args.pretrain_corpus_path)
    tconf = knobs.train_config_of(args, rt.recipe, len(corpus), rt.world)
    out = stages.finetune(args.pretrain_corpus_path, args.finetune_corpus_path, rt.spec, tconf,
                          args.writing_params_path, reading_params_path=args.reading_params_path, device=rt.device,
                          tensorboard=_tensorboard(args, rt.recipe, "finetune"), progress=rt.progress,
                          save_every=args.save_every, checkpoint_every=args.checkpoint_every, resume=args.resume,
                          corpus=corpus)
    return _trained(args, out)


def _trained(args, out: TrainOutcome) -> int:
    """What a finished training command says (from the main process only)."""
    from factgpt.runtime import is_main_process

    if is_main_process():
        notes, line = out.account(args.command)
        print("\n".join(notes), file=sys.stderr, end="\n" if notes else "")
        print(line)
    return 0


def _evaluate(args) -> int:
    from factgpt import stages
    from factgpt.evaluate import mistakes

    rt = _runtime(args)
    _require(args, "reading_params_path", "eval_corpus_path", "outputs_path")
    tqdm = None
    if rt.progress and args.engine == "reference" and sys.stderr.isatty():
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


def _table(args, table, run_args: dict, *, title: str, note, published) -> int:
    """The tail that demo and reproduce share: run (or resume) the table's stages, write the report,
    print the table. `note(run, summary)` is the report's paragraph on what was run."""
    from factgpt.report import format_table, summarize, write_report

    summary = summarize(table.run(**run_args))
    report = write_report(table.out, summary, table.records, title=title, budget_note=note(table, summary),
                          published=published)
    print(format_table(summary, published))
    print(f"report: {report}", file=sys.stderr)
    return 0


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _demo(args) -> int:
    from factgpt.recipes import demo_recipe
    from factgpt.report import demo_note
    from factgpt.runtime import resolve_device
    from factgpt.synthetic import make_world
    from factgpt.table import Files, TableRun, check_table_folder

    recipe = demo_recipe(args.tiny, args.pretrain_epochs)
    people = args.people or (20 if args.tiny else 200)
    world = make_world(n_people=people, seed=args.seed)
    out = Path(args.out)
    check_table_folder(out, recipe, world.texts())  # before the world's files are written
    paths = world.write(out)
    _say(f"world: {len(world.people)} people, {len(world.documents)} documents in {paths['corpus']}; "
         f"finetuning on {len(world.train)}, asking about {len(world.heldout)} held-out people "
         "whose birthplaces only the pretraining corpus tells")
    table = TableRun(Files(paths["corpus"], paths["train"], paths["heldout"]), recipe, out,
                     device=resolve_device(args.device), progress=not args.quiet, log=_say)
    return _table(args, table, {"seeds": 1, "first_seed": args.seed}, title="factgpt demo: a fictional world",
                  note=lambda run, summary: demo_note(summary, recipe.name, args.seed), published=None)


def _reproduce(args) -> int:
    from factgpt.recipes import with_budget
    from factgpt.report import PUBLISHED, ROWS, budget_note
    from factgpt.runtime import resolve_device
    from factgpt.table import TableRun, check_rows, study_files

    recipe = with_budget(args.budget, probe_every=args.probe_every)
    rows = check_rows(args.rows or ROWS)
    layout = {k: v for k, v in (("group_tokens", args.group_tokens), ("kernels", args.kernels)) if v is not None}
    table = TableRun(study_files(args.data_dir), recipe, args.out, device=resolve_device(args.device),
                     progress=not args.quiet, log=_say, checkpoint_every=args.checkpoint_every, layout=layout)
    return _table(args, table, {"seeds": args.seeds, "rows": rows, "first_seed": args.first_seed},
                  title="factgpt reproduce: the study's table", published=PUBLISHED,
                  note=lambda run, summary: budget_note(recipe, args.seeds, len(run.questions)))


STUDY_COMMANDS = (
    Command("pretrain", "span-corruption pretraining on the corpus", lambda p: _study_args(p, "pretrain"), _pretrain),
    Command("finetune", "finetune on question/answer pairs", lambda p: _study_args(p, "finetune"), _finetune),
    Command("evaluate", "greedy answers for a question file, and their accuracy",
            lambda p: _study_args(p, "evaluate"), _evaluate),
    Command("london", "the always-London baseline on a labelled TSV", _london_args, _london),
    Command("data", "the study's data files: `factgpt data download`", _data_args, _data),
    Command("reproduce", "the study's table on the real data, stage by stage, with a report", _reproduce_args,
            _reproduce),
    Command("demo", "the study's table on a generated world of fictional biographies (minutes)", _demo_args, _demo),
)


def commands() -> dict[str, Command]:
    """The study's commands, then those the `factgpt.commands` entry point adds (the instruments)."""
    found = {c.name: c for c in STUDY_COMMANDS}
    for ep in entry_points(group="factgpt.commands"):
        for c in ep.load():
            found.setdefault(c.name, c)
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="factgpt", description="How a small GPT learns facts from text and gives them back "
                    "(CS224N a5 reproduction). `factgpt COMMAND --help` lists a command's flags.")
    parser.add_argument("--version", action="version", version=f"factgpt {version('factgpt')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for c in commands().values():
        c.build(sub.add_parser(c.name, help=c.help, description=c.help))
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line as the command's parser reads it: flags and positionals in any order, either
    spelling of a flag, a suggestion for a mistyped command."""
    parser = build_parser()
    if not argv or argv[0].startswith("-"):
        parser.parse_args(spelling(argv))  # --help, --version, or a usage error: each exits here
    choices = parser._subparsers._group_actions[0].choices
    name, rest = argv[0], spelling(argv[1:])
    if name not in choices:
        close = difflib.get_close_matches(name, list(choices), n=1)
        parser.error(f"no command {name!r}" + (f" (did you mean {close[0]}?)" if close else "")
                     + f"; commands: {', '.join(choices)}")
    args = choices[name].parse_intermixed_args(rest)
    args.command = name
    return args


def _interrupted(args, argv: list[str], e: Interrupted | None) -> str:
    """What an interrupted command says: the step and resume point it stopped at (a Ctrl-C), or
    the last resume point a kill left, and the command line that continues."""
    if e is not None:
        step, point = f" at step {e.step}", e.resume_path
    else:
        from factgpt.checkpoint import resume_path_for
        written = getattr(args, "writing_params_path", None)
        step, point = "", resume_path_for(written) if written else None
        if point is None or not point.exists():
            again = "; run the same command to continue" if args.command == "reproduce" else ""
            return f"factgpt: interrupted{again}"
    words = [w for w in argv if w != "--restart"]
    if args.command in knobs.TRAINING and "--resume" not in words:
        words.append("--resume")
    return f"factgpt: interrupted{step}; its resume point is {point}; continue with: factgpt {shlex.join(words)}"


def main(argv: list[str] | None = None) -> int:
    from factgpt.runtime import leave_distributed

    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    args = parse(argv)
    if getattr(args, "threads", None):  # every command that computes takes --threads
        import torch
        torch.set_num_threads(args.threads)
    try:
        code = commands()[args.command].run(args)
    except FactgptError as e:
        print(f"factgpt: error: {e}", file=sys.stderr)
        code = 1
    except (Interrupted, KeyboardInterrupt) as e:
        print(_interrupted(args, argv, e if isinstance(e, Interrupted) else None), file=sys.stderr)
        code = 130
    leave_distributed(code)  # under torchrun: exits here
    return code
