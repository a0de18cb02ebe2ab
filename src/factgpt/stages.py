"""The study's three functions as library calls: pretrain, finetune, evaluate.

They read the files, build or load the model, run the trainer or the decoder and write the
outputs; they return what happened and never print (the CLI, demo and reproduce report).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from factgpt.checkpoint import (
    Checkpoint,
    check_compatible,
    load_checkpoint,
    load_training_state,
    resume_path_for,
    save_checkpoint,
    save_training_state,
)
from factgpt.config import (
    BLOCK_SIZE,
    REFERENCE,
    REFERENCE_CORRUPTION,
    SHAPE_FIELDS,
    Corruption,
    GPTConfig,
    Recipe,
    TrainConfig,
    same_training,
)
from factgpt.data import (
    CharCorruptionDataset,
    MixedDataset,
    NameDataset,
    Question,
    read_questions,
    read_text,
    split_lines,
)
from factgpt.errors import FactgptError, Interrupted
from factgpt.evaluate import Score, predict, score
from factgpt.model import GPT
from factgpt.outputs import atomic_write_text
from factgpt.probe import ProbeSchedule, probe_items, run_probe, run_qa_probe, split_heldout
from factgpt.runtime import is_main_process
from factgpt.train import Trainer, TrainingData, TrainState


@dataclass(frozen=True)
class ModelSpec:
    """The model a command asks for: the `variant` of the recipe's model. A checkpoint it starts from
    or evaluates must be of that variant and have the recipe's value of each `pinned` shape field
    (all of them by default; the command line pins the ones it was given); the others are the
    checkpoint's."""
    variant: str = "vanilla"
    recipe: Recipe = REFERENCE
    pinned: tuple[str, ...] = SHAPE_FIELDS

    def config(self, vocab_size: int) -> GPTConfig:
        return self.recipe.model_config(vocab_size, self.variant == "perceiver")


def load_corpus(path: str | Path, seed: int = 0,
                corruption: Corruption = REFERENCE_CORRUPTION) -> CharCorruptionDataset:
    return CharCorruptionDataset(read_text(path), BLOCK_SIZE, source=path, seed=seed, corruption=corruption)


def load_pairs(corpus: CharCorruptionDataset, path: str | Path) -> NameDataset:
    """The question<TAB>answer pairs of `path`, in the corpus's vocabulary."""
    return NameDataset(corpus, read_text(path), source=path)


def mixed_pairs(corpus: CharCorruptionDataset, path: str | Path) -> NameDataset:
    """The pairs of `path` that pretraining mixes in: all but its held-out people (its last lines,
    `probe.split_heldout`), whom the knowledge probe asks instead."""
    kept = split_heldout(split_lines(read_text(path)), source=path)[0]
    return NameDataset(corpus, "".join(ln + "\n" for ln in kept), source=path)


def knowledge_probe(corpus: CharCorruptionDataset, pairs_path: str | Path, every: int, *,
                    ask: bool = False) -> ProbeSchedule | None:
    """The knowledge probe every `every` epochs (None for 0) on the held-out people of `pairs_path`
    (its last lines: settings are chosen on them, never on dev); with `ask` (pairs mixed into
    pretraining), it also asks them `Where was NAME born?`."""
    if not every:
        return None
    heldout = split_heldout(read_questions(pairs_path, require_answers=True), source=pairs_path)[1]
    return ProbeSchedule(every, probe_items(heldout, "\n".join(corpus.data), max_prefix=corpus.max_len),
                         heldout if ask else [])


def load_model(params_path: str | Path, spec: ModelSpec, corpus: CharCorruptionDataset,
               corpus_path: str | Path) -> tuple[GPT, Checkpoint]:
    ckpt = load_checkpoint(params_path, n_head=spec.recipe.n_head)
    check_compatible(ckpt, params_path, variant=spec.variant,
                     shape={f: getattr(spec.recipe, f) for f in spec.pinned}, vocab=corpus.vocab,
                     corpus=corpus_path)
    return ckpt.build_model(), ckpt


def starting_model(spec: ModelSpec, corpus: CharCorruptionDataset, corpus_path: str | Path, seed: int,
                   params_path: str | Path | None = None) -> GPT:
    """Seed torch's generator (parameter init and dropout draw from it), then the checkpoint at
    `params_path` to continue from (checked against the spec and the corpus; trained at the recipe's
    dropout) or a fresh model."""
    torch.manual_seed(seed)
    if params_path:
        model = load_model(params_path, spec, corpus, corpus_path)[0]
        model.set_dropout(spec.recipe.dropout)  # the recipe's, not the checkpoint's (the reference's way)
        return model
    return GPT(spec.config(corpus.vocab_size))


def resume_point(writing_params_path: str | Path, *, resume: bool = False, restart: bool = False) -> Path | None:
    """The resume point an interrupted run writing `writing_params_path` left, if there is one and
    `resume` asks to continue from it. Found but not asked for, it is refused in one line (continue
    with --resume, or start over with --restart, which deletes it here), before anything is written:
    a run must never replace an interrupted run's work without being told to."""
    path = resume_path_for(writing_params_path)
    if not path.exists():
        return None
    if resume:
        return path
    if restart:
        path.unlink()
        return None
    raise FactgptError("an interrupted run left its resume point here", path=path,
                       hint="continue it with --resume, or start over with --restart")


def check_writable(path: str | Path) -> None:
    """Fail before any work when the output cannot be written (a folder in its place, a missing or
    read-only folder)."""
    if Path(path).is_dir():
        raise FactgptError("the output path is a folder", path=path, hint="give a file name inside it")
    folder = Path(path).parent
    if not folder.is_dir():
        raise FactgptError("the output folder does not exist", path=folder, hint="create it first")
    probe = folder / f".factgpt-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise FactgptError(f"cannot write into the output folder: {e.strerror}", path=folder) from None


@dataclass
class TrainOutcome:
    state: TrainState
    seconds: float
    params_path: Path
    resumed_from: int | None = None  # the step a resumed run started at
    compile_fallback: str | None = None  # why --compile fell back to eager, if it did
    precision: str = "fp32"  # what the run computed in ("auto" resolved)
    kernels: str = "torch"  # what the fast engine trained with ("fused" or "torch")
    kernels_fallback: str | None = None  # why not the fused kernels asked for, where they could not serve

    def account(self, stage: str) -> tuple[list[str], str]:
        """(notes, one line) that a finished stage is reported with."""
        st, s = self.state, max(self.seconds, 1e-9)
        notes = [f"resumed at step {self.resumed_from}"] if self.resumed_from is not None else []
        if self.compile_fallback:
            notes.append(f"note: torch.compile failed ({self.compile_fallback}); trained eagerly")
        if self.kernels_fallback:
            notes.append(f"note: the fused kernels were not used ({self.kernels_fallback}); trained with "
                         "torch's operations")
        return notes, (f"{stage}: {st.epoch} epochs, {st.step} steps, {st.examples} examples in {self.seconds:.1f} s "
                       f"({st.tokens / s:,.0f} tokens/s counted as the reference counts, {st.useful_tokens / s:,.0f} "
                       f"useful); final loss {st.losses[-1]:.4f}; {self.precision}; wrote {self.params_path}")


def run_training(model: GPT, dataset: TrainingData, tconf: TrainConfig, corpus: CharCorruptionDataset,
                 writing_params_path: str | Path, *, stage: str, device: torch.device, tensorboard=None,
                 progress: bool = True, save_every: int = 0, checkpoint_every: int = 0,
                 resume: bool = False, probe: ProbeSchedule | None = None) -> TrainOutcome:
    """Train, write the checkpoint; every `checkpoint_every` steps also write a resume point
    (model, optimizer, RNG states, position) beside it, which `resume` continues from. With a
    `probe`, the knowledge probe runs every `probe.every` epochs and after the last one; its
    results go to the TrainState (and so to resume points and records) and to TensorBoard.
    `tensorboard` opens a SummaryWriter; it is called once every check has passed, as training
    starts, so that a refused run leaves no log folder behind."""
    check_writable(writing_params_path)
    t0 = time.perf_counter()
    resume_file = resume_path_for(writing_params_path)
    found = resume_point(writing_params_path, resume=resume)  # refused unless asked for

    def save(st: TrainState) -> None:
        if not is_main_process():
            return
        meta = {"stage": stage, "epochs": st.epoch, "max_epochs": tconf.max_epochs, "steps": st.step,
                "tokens": st.tokens, "seconds": round(time.perf_counter() - t0, 2),
                "seed": tconf.seed, "engine": tconf.engine, "precision": trainer.precision, "kernels": trainer.kernels,
                "final_loss": st.losses[-1] if st.losses else None, "probes": st.probes,
                "frozen": tconf.frozen}  # parameters this stage left as it found them ("" none)
        save_checkpoint(writing_params_path, model, corpus.vocab, meta)

    def on_epoch_end(trainer: Trainer) -> None:
        st = trainer.state
        if probe is not None and is_main_process() and (st.epoch % probe.every == 0
                                                        or st.epoch == tconf.max_epochs):
            known = run_probe(model, corpus.vocab, probe.items)
            result = {"epoch": st.epoch, "step": st.step, "seconds": round(st.seconds, 1), "known": known}
            if probe.questions:
                result["answered"] = run_qa_probe(model, corpus.vocab, probe.questions)
            st.probes.append(result)
            if trainer.writer is not None:
                trainer.writer.add_scalar("probe/known", known, st.step)
                if "answered" in result:
                    trainer.writer.add_scalar("probe/answered", result["answered"], st.step)
        if save_every and st.epoch % save_every == 0 and st.epoch < tconf.max_epochs:
            save(st)

    def checkpoint(trainer: Trainer) -> None:
        if is_main_process():
            save_training_state(resume_file, *trainer.snapshot())

    trainer = Trainer(model, dataset, tconf, device=device, progress=progress, checkpoint_every=checkpoint_every,
                      label=stage)
    trainer.add_callback("on_epoch_end", on_epoch_end)
    trainer.add_callback("on_checkpoint", checkpoint)
    resumed_from = None
    if found is not None:
        tensors, meta = load_training_state(resume_file)
        mine = trainer.identity()
        if meta["model"] != mine["model"] or not same_training(meta["config"], mine["config"]):
            raise FactgptError("the resume point belongs to a run with another model or recipe", path=resume_file,
                               hint="use the same flags as the interrupted run, or delete it")
        try:  # written by us, so a failure here means the file was edited or damaged
            trainer.restore(tensors, meta)
        except torch.cuda.OutOfMemoryError:  # the device's trouble, not the file's: keep the resume point
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise FactgptError(f"the resume point is malformed ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                               path=resume_file, hint="if it was edited or damaged, delete it to start over") from None
        resumed_from = trainer.state.step
    trainer.writer = tensorboard() if tensorboard is not None and is_main_process() else None
    try:
        with stop_on_interrupt(trainer) as interrupted:
            st = trainer.train()
    finally:
        if trainer.writer is not None:
            trainer.writer.close()  # flushed, however training ends
    if interrupted() and st.epoch < tconf.max_epochs:  # Ctrl-C: keep where the run stands, say how to go on
        if is_main_process():
            save_training_state(resume_file, *trainer.snapshot())
        raise Interrupted(st.step, resume_file)
    seconds = time.perf_counter() - t0
    save(st)
    if is_main_process():
        resume_file.unlink(missing_ok=True)  # finished: nothing to resume
    return TrainOutcome(st, seconds, Path(writing_params_path), resumed_from, trainer.compile_fallback,
                        trainer.precision, trainer.kernels, trainer.kernels_fallback)


@contextlib.contextmanager
def stop_on_interrupt(trainer: Trainer):
    """While training in one process, a first Ctrl-C ends training after the current step (so that
    its resume point holds a whole step) and a second one interrupts at once. Yields a function that
    says whether a Ctrl-C came. Under torchrun every process must stop at the same step, so there a
    Ctrl-C interrupts at once and the last periodic resume point is where to continue."""
    came = []
    if trainer.world > 1 or threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame) -> None:
        came.append(signum)
        trainer.stop()
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C: the usual KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(came)
    finally:
        signal.signal(signal.SIGINT, previous)


def pretrain(corpus_path, spec: ModelSpec, tconf: TrainConfig, writing_params_path, *,
             device, tensorboard=None, progress=True, reading_params_path=None,
             save_every: int = 0, checkpoint_every: int = 0, resume: bool = False,
             corpus: CharCorruptionDataset | None = None, pairs: NameDataset | None = None,
             probe_every: int = 0, probe_path=None) -> TrainOutcome:
    """Span-corruption pretraining; with `pairs` (`mixed_pairs`, built once by the caller, who also
    counts them for the schedule), those question/answer pairs are mixed in; with `probe_every`, the
    held-out people of `probe_path` (its last lines) are probed as it goes."""
    corpus = corpus if corpus is not None else load_corpus(corpus_path)  # the Trainer seeds its draws
    model = starting_model(spec, corpus, corpus_path, tconf.seed, reading_params_path)
    data = corpus if pairs is None else MixedDataset(corpus, pairs)
    probe = knowledge_probe(corpus, probe_path, probe_every, ask=pairs is not None)
    return run_training(model, data, tconf, corpus, writing_params_path, stage="pretrain",
                        device=device, tensorboard=tensorboard, progress=progress, save_every=save_every,
                        checkpoint_every=checkpoint_every, resume=resume, probe=probe)


def finetune(corpus_path, finetune_path, spec: ModelSpec, tconf: TrainConfig, writing_params_path,
             *, reading_params_path=None, device, tensorboard=None, progress=True,
             save_every: int = 0, checkpoint_every: int = 0, resume: bool = False,
             corpus: CharCorruptionDataset | None = None) -> TrainOutcome:
    corpus = corpus if corpus is not None else load_corpus(corpus_path)  # the Trainer seeds its draws
    names = load_pairs(corpus, finetune_path)
    model = starting_model(spec, corpus, corpus_path, tconf.seed, reading_params_path)
    return run_training(model, names, tconf, corpus, writing_params_path, stage="finetune",
                        device=device, tensorboard=tensorboard, progress=progress, save_every=save_every,
                        checkpoint_every=checkpoint_every, resume=resume)


@dataclass
class EvalOutcome:
    questions: list[Question]
    predictions: list[str]
    score: Score | None
    seconds: float


def evaluate(corpus_path, reading_params_path, eval_path, outputs_path, spec: ModelSpec, *,
             device, engine: str = "fast", progress=None, corpus: CharCorruptionDataset | None = None,
             questions: list[Question] | None = None, extra: tuple = ()) -> EvalOutcome:
    """Greedy answers to the questions of `eval_path` (read here unless given), written one a line
    to `outputs_path`, and their accuracy where the file has answers; `extra`: (questions file,
    outputs path) pairs answered by the same model, as reproduce does for birth_test_inputs.tsv."""
    corpus = corpus if corpus is not None else load_corpus(corpus_path)
    model, _ = load_model(reading_params_path, spec, corpus, corpus_path)
    model.to(device)
    questions = questions if questions is not None else read_questions(eval_path)
    for out in (outputs_path, *(o for _, o in extra)):
        if out is not None:
            check_writable(out)
    t0 = time.perf_counter()
    preds = predict(model, questions, corpus.vocab, engine=engine, source=eval_path, progress=progress)
    seconds = time.perf_counter() - t0
    if outputs_path is not None:
        write_predictions(outputs_path, preds)
    for path, out in extra:
        write_predictions(out, predict(model, read_questions(path), corpus.vocab, engine=engine, source=path))
    return EvalOutcome(questions, preds, score(questions, preds), seconds)


# A line break inside an answer (the model may write one) is written as this sign, so that the file
# keeps one answer a line; no gold answer holds it, so scoring the file scores what the model said.
LINE_BREAK = {"\n": "\u2424", "\r": "\u240d"}  # ␤ and ␍


def write_predictions(path: str | Path, predictions: list[str]) -> None:
    """One answer a line, as the reference's run.py writes them (line breaks inside an answer as ␤)."""
    table = str.maketrans(LINE_BREAK)
    atomic_write_text(path, "".join(p.translate(table) + "\n" for p in predictions))


def load_for_inference(params_path, corpus_path=None, *, n_head: int = 8, device="cpu"):
    """(model, vocab) from a factgpt checkpoint (vocabulary inside) or a reference .params file
    (vocabulary from the pretraining corpus)."""
    from factgpt.data import Vocab

    ckpt = load_checkpoint(params_path, n_head=n_head)
    if corpus_path is not None:
        vocab = load_corpus(corpus_path).vocab
        check_compatible(ckpt, params_path, variant=ckpt.config.variant, shape={}, vocab=vocab,
                         corpus=corpus_path)
    elif ckpt.vocab is not None:
        vocab: Vocab = ckpt.vocab
    else:
        raise FactgptError("a reference checkpoint carries no vocabulary", path=params_path,
                           hint="pass --pretrain_corpus wiki.txt")
    return ckpt.build_model().to(device).eval(), vocab
