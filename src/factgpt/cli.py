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
import sys
from pathlib import Path

from factgpt.errors import FactgptError

VARIANTS = ("vanilla", "perceiver")


def _study_parser(sub, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("variant", choices=VARIANTS, help="vanilla GPT or the perceiver variant")
    p.add_argument("pretrain_corpus_path", help="the pretraining corpus (wiki.txt); it also fixes the vocabulary")
    p.add_argument("--reading_params_path", default=None, help="checkpoint to start from / evaluate")
    p.add_argument("--writing_params_path", default=None, help="where to write the trained checkpoint")
    p.add_argument("--finetune_corpus_path", default=None, help="question<TAB>answer TSV to finetune on")
    p.add_argument("--eval_corpus_path", default=None, help="TSV of questions (with or without answers)")
    p.add_argument("--outputs_path", default=None, help="where evaluate writes one prediction a line")
    p.add_argument("--pretrain_lr", type=float, default=6e-3, help="pretraining learning rate (6e-3)")
    p.add_argument("--finetune_lr", type=float, default=6e-4, help="finetuning learning rate (6e-4)")
    p.add_argument("--bottleneck_dim", type=int, default=32, help="perceiver latent length m (32)")
    p.add_argument("--tb_expt_name", default="run", help="TensorBoard run name (under --tb_dir)")
    g = p.add_argument_group("overrides (default: the reference recipe)")
    g.add_argument("--max_epochs", type=int, default=None,
                   help="epochs (pretrain 650; finetune 75, or 10 after pretraining)")
    g.add_argument("--batch_size", type=int, default=None, help="examples per step (pretrain 128, finetune 256)")
    g.add_argument("--final_tokens", type=int, default=None,
                   help="tokens at which the cosine reaches its floor (reference: 200 * documents * 128)")
    g.add_argument("--save_every", type=int, default=0,
                   help="also write the checkpoint every N epochs (0: only at the end)")
    g.add_argument("--n_layer", type=int, default=4, help="transformer blocks (4)")
    g.add_argument("--n_head", type=int, default=8, help="attention heads (8)")
    g.add_argument("--n_embd", type=int, default=256, help="embedding width (256)")
    g.add_argument("--seed", type=int, default=0, help="seed for init, dropout and corruption draws (0)")
    g.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    g.add_argument("--path", choices=("fast", "reference"), default="fast",
                   help="fast (packed batches, fused kernels, KV-cache decoding) or the reference's computation")
    g.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16 autocast or fp32 (fp32)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    g.add_argument("--tb_dir", default="expt", help="TensorBoard root folder (expt, as the reference)")
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

    p = sub.add_parser("data", help="the study's data files")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    d = dsub.add_parser("download", help="fetch the four files and check their SHA-256 sums")
    d.add_argument("--dest", default="data", help="folder to write into (data)")
    d.add_argument("--base-url", default=None, help="where the files are (default: the public copy)")
    return parser


def _writer(args, function: str):
    if args.no_tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter
    name = "%s_%s_%d_pt_lr_%f_ft_lr_%f" % (args.tb_expt_name, args.variant, args.bottleneck_dim,
                                           args.pretrain_lr, args.finetune_lr)
    return SummaryWriter(log_dir=str(Path(args.tb_dir) / function / name))


def _require(args, *names: str) -> None:
    for n in names:
        if getattr(args, n) is None:
            raise FactgptError(f"`factgpt {args.command}` needs --{n}")


def _study(args) -> int:
    import torch

    from factgpt import stages
    from factgpt.config import finetune_config, pretrain_config

    if args.threads:
        torch.set_num_threads(args.threads)
    device = stages.resolve_device(args.device)
    spec = stages.ModelSpec(args.variant, args.bottleneck_dim, args.n_layer, args.n_head, args.n_embd)
    overrides = dict(max_epochs=args.max_epochs, batch_size=args.batch_size, seed=args.seed,
                     path=args.path, precision=args.precision, final_tokens=args.final_tokens)
    progress = not args.quiet
    if args.command == "pretrain":
        _require(args, "writing_params_path")
        corpus = stages.load_corpus(args.pretrain_corpus_path)
        tconf = pretrain_config(len(corpus), args.pretrain_lr, **overrides)
        out = stages.pretrain(args.pretrain_corpus_path, spec, tconf, args.writing_params_path,
                              device=device, writer=_writer(args, "pretrain"), progress=progress,
                              reading_params_path=args.reading_params_path, save_every=args.save_every)
    elif args.command == "finetune":
        _require(args, "writing_params_path", "finetune_corpus_path")
        corpus = stages.load_corpus(args.pretrain_corpus_path)
        tconf = finetune_config(len(corpus), args.reading_params_path is not None, args.finetune_lr,
                                **overrides)
        out = stages.finetune(args.pretrain_corpus_path, args.finetune_corpus_path, spec, tconf,
                              args.writing_params_path, reading_params_path=args.reading_params_path,
                              device=device, writer=_writer(args, "finetune"), progress=progress,
                              save_every=args.save_every)
    else:
        _require(args, "reading_params_path", "eval_corpus_path", "outputs_path")
        tqdm = None
        if progress and args.path == "reference":
            from tqdm.auto import tqdm
        ev = stages.evaluate(args.pretrain_corpus_path, args.reading_params_path,
                             args.eval_corpus_path, args.outputs_path, spec, device=device,
                             fast=args.path == "fast", progress=tqdm)
        if ev.score is None:
            print(f"Predictions written to {args.outputs_path}; {args.eval_corpus_path} has no "
                  "answers, so no accuracy")
        else:
            print(ev.score.line())
        print(f"({len(ev.predictions)} questions in {ev.seconds:.2f} s)", file=sys.stderr)
        return 0
    st = out.state
    print(f"{args.command}: {st.epoch} epochs, {st.step} steps, {st.examples} examples in "
          f"{out.seconds:.1f} s ({st.tokens / max(out.seconds, 1e-9):,.0f} tokens/s counted as the "
          f"reference counts, {st.useful_tokens / max(out.seconds, 1e-9):,.0f} useful); final loss "
          f"{st.losses[-1]:.4f}; wrote {out.params_path}")
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


COMMANDS = {"pretrain": _study, "finetune": _study, "evaluate": _study, "london": _london,
            "data": _data}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FactgptError as e:
        print(f"factgpt: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("factgpt: interrupted", file=sys.stderr)
        return 130
