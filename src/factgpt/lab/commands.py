"""The instruments' commands: `factgpt ask`, `sample`, `analyze`, `attention-lab`, `bench`, `heldout`.

They plug into the `factgpt` command through the `factgpt.commands` entry point (pyproject.toml),
so the study (factgpt.cli and the core) never imports the lab. Like factgpt.cli, this module parses,
calls the lab's library functions and prints; the library raises FactgptError, which the `factgpt`
command turns into one line.
"""

from __future__ import annotations

import sys
from pathlib import Path

from factgpt.cmdline import Command
from factgpt.errors import FactgptError
from factgpt.knobs import add_knobs, non_negative, positive

CHECKPOINT_HELP = "checkpoint (factgpt, or a reference .params file with --pretrain_corpus_path)"
CORPUS_HELP = "the pretraining corpus: the vocabulary of a reference checkpoint (a factgpt one carries its own)"


def _model_args(p) -> None:
    p.add_argument("--reading_params_path", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--pretrain_corpus_path", default=None, help=CORPUS_HELP)
    p.add_argument("--n_head", type=positive(int), default=8, help="heads of a reference checkpoint (8)")


def _ask_args(p) -> None:
    p.add_argument("question", nargs="?", default=None, help='"Where was NAME born?" (none: ask interactively)')
    _model_args(p)
    p.add_argument("--top_k", type=positive(int), default=5, help="answers to list (5)")


def _ask(args) -> int:
    from factgpt import stages
    from factgpt.lab.answers import answer_lines

    model, vocab = stages.load_for_inference(args.reading_params_path, args.pretrain_corpus_path, n_head=args.n_head)
    if args.question is not None:
        print("\n".join(answer_lines(model, vocab, args.question, args.top_k)))
        return 0
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("question (empty to quit)> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line.strip():
            return 0
        try:
            print("\n".join(answer_lines(model, vocab, line.rstrip("\n"), args.top_k)))
        except FactgptError as e:  # one bad question does not end the session
            print(f"factgpt: {e}", file=sys.stderr)


def _sample_args(p) -> None:
    _model_args(p)
    p.add_argument("--prompt", required=True, help="text to continue; `prefix⁇suffix⁇` asks for the missing span")
    p.add_argument("--steps", type=positive(int), default=64, help="characters to generate (64)")
    p.add_argument("--temperature", type=positive(float), default=None,
                   help="sample at this temperature (default: greedy)")
    p.add_argument("--top_k", type=positive(int), default=None, help="sample among the k most likely characters")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling (0)")


def _sample(args) -> int:
    from factgpt import stages
    from factgpt.lab.answers import fill

    model, vocab = stages.load_for_inference(args.reading_params_path, args.pretrain_corpus_path, n_head=args.n_head)
    text, span = fill(model, vocab, args.prompt, args.steps, temperature=args.temperature, top_k=args.top_k,
                      seed=args.seed)
    print(text)
    if span is not None:
        print(f"filled span: {span!r}", file=sys.stderr)
    return 0


def _analyze_args(p) -> None:
    p.add_argument("--predictions_path", required=True, help="one prediction a line (`factgpt evaluate`'s "
                   "--outputs_path)")
    p.add_argument("--eval_corpus_path", required=True, help="the labelled questions they answer")
    p.add_argument("--pretrain_corpus_path", required=True, help="the pretraining corpus (wiki.txt)")
    p.add_argument("--finetune_corpus_path", default=None,
                   help="the finetuning pairs: the prior's answers and similar finetuning names")
    p.add_argument("--reading_params_path", default=None, help="the checkpoint that made them: a calibration table")
    p.add_argument("--out", default=None, help="folder for summary.md, categories.tsv and categories.png")


def _analyze(args) -> int:
    from factgpt.lab.answers import analyze_files, summary_markdown, write_categories_tsv, write_chart
    from factgpt.outputs import atomic_write_text, ensure_folder

    a = analyze_files(args.predictions_path, args.eval_corpus_path, args.pretrain_corpus_path,
                      args.finetune_corpus_path, args.reading_params_path)
    text = summary_markdown(a, title=f"Where the answers in {Path(args.predictions_path).name} come from")
    print(text)
    if args.out:
        out = ensure_folder(args.out)
        atomic_write_text(out / "summary.md", text)
        write_categories_tsv(a, out / "categories.tsv")
        write_chart(a, out / "categories.png")
        print(f"wrote {out / 'summary.md'}, categories.tsv and categories.png", file=sys.stderr)
    else:
        print("(no --out: nothing written)", file=sys.stderr)
    return 0


def _attention_args(p) -> None:
    p.add_argument("--out", default="attention_lab", help="folder for report.md and the figures (attention_lab)")
    p.add_argument("--seed", type=int, default=0, help="seed of keys, values and samples (0)")
    p.add_argument("--samples", type=positive(int), default=2000, help="sampled key sets for (c) and (d) (2000)")


def _attention(args) -> int:
    from factgpt.lab.attention import format_checks, run_lab, write_figures, write_report
    from factgpt.outputs import ensure_folder

    out = ensure_folder(args.out)
    checks, data = run_lab(seed=args.seed, samples=args.samples)
    write_figures(data, out)
    report = write_report(checks, data, out)
    print(format_checks(checks))
    print(f"report: {report}", file=sys.stderr)
    return 0 if all(c.passed for c in checks) else 1


def _bench_args(p) -> None:
    p.add_argument("--data_dir", default="data", help="folder with the study's four files (data)")
    p.add_argument("--steps", type=positive(int), default=4, help="timed optimiser steps per path (4)")
    p.add_argument("--reading_params_path", default=None, help="checkpoint to decode with (default: untrained model)")
    p.add_argument("--decode_sample", type=positive(int), default=20, help="questions decoded one at a time (20)")
    add_knobs(p, "bench")


def _bench(args) -> int:
    from factgpt.lab.bench import FAST_VARIANTS, Variant, format_report, run_bench
    from factgpt.runtime import machine, resolve_device

    device = resolve_device(args.device)
    variants = FAST_VARIANTS
    if args.group_tokens is not None:
        variants += (Variant(f"default, groups of {args.group_tokens} ids", layout="grouped",
                             group_tokens=args.group_tokens),)
    result = run_bench(args.data_dir, steps=args.steps, params=args.reading_params_path, device=device,
                       decode_sample=args.decode_sample, variants=variants, log=lambda m: print(m, file=sys.stderr))
    print(f"machine: {machine(device)}")
    print(format_report(result))
    return 0


def _heldout_args(p) -> None:
    p.add_argument("--reading_params_path", required=True, help="a pretrained checkpoint")
    p.add_argument("--pretrain_corpus_path", required=True, help="the pretraining corpus (wiki.txt)")
    p.add_argument("--finetune_corpus_path", required=True, help="the finetuning pairs (birth_places_train.tsv): "
                   "finetuning on all but the last 200 lines, asking those")
    p.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.1], help="finetuning dropouts (0 0.1)")
    p.add_argument("--lrs", type=positive(float), nargs="+", default=None, help="learning rates (the reference's)")
    p.add_argument("--epochs", type=positive(int), nargs="+", default=None, help="epochs (the reference's)")
    p.add_argument("--frozen", nargs="+", default=[""], metavar="REGEX", help="per run, a regular expression of "
                   "parameter names finetuning leaves as pretrained, e.g. 'mlp|emb' (default: none)")
    p.add_argument("--seed", type=non_negative(int), default=0, help="seed of the finetuning (0)")
    add_knobs(p, "heldout")


def _heldout(args) -> int:
    from factgpt.lab.heldout import Setting, format_result, heldout_qa, settings
    from factgpt.runtime import resolve_device

    device = resolve_device(args.device)
    for s in settings(args.dropouts, args.lrs or [Setting.learning_rate], args.epochs or [Setting.max_epochs],
                      args.frozen):
        r = heldout_qa(args.reading_params_path, args.pretrain_corpus_path, args.finetune_corpus_path, s,
                       seed=args.seed, device=device)
        print(format_result(r), flush=True)
    return 0


COMMANDS = (
    Command("ask", "where was someone born: the greedy answer and the top-k with probabilities", _ask_args, _ask),
    Command("sample", "continue a prompt, or fill a span `prefix⁇suffix⁇`", _sample_args, _sample),
    Command("analyze", "sort predictions into error categories; the similar-name test", _analyze_args, _analyze),
    Command("attention-lab", "the attention-exploration answers, measured, checked and drawn", _attention_args,
            _attention),
    Command("bench", "speed: the reference and fast engines, one run, with MFU", _bench_args, _bench),
    Command("heldout", "held-out QA of a pretrained checkpoint: finetune on the training pairs but 200, ask those",
            _heldout_args, _heldout),
)
