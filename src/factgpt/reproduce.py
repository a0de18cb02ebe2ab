"""The study's results table, end to end: `factgpt demo` and `factgpt reproduce`.

A table is four rows: a most-frequent-answer baseline, vanilla finetuned without pretraining,
vanilla pretrained + finetuned, perceiver pretrained + finetuned. Each trained row is a chain of
stages (pretrain -> finetune -> evaluate); a stage whose outputs exist is skipped, so an
interrupted run picks up at the first unfinished stage. Every stage records its command line
(`Stage.argv`, which the `factgpt` parser reads back into the same configs), config, commit, machine
and wall time in OUT/stages.json; report.md, the loss curves and the accuracy chart are written from
those records. The recipes are `factgpt.config.REFERENCE` and replacements of it (`factgpt.recipes`).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from factgpt.atomic import atomic_save_figure, atomic_write_text, ensure_folder, pyplot
from factgpt.checkpoint import resume_path_for
from factgpt.config import (
    CHECKPOINT_EVERY,
    LAYOUT_FIELDS,
    REFERENCE,
    Corruption,
    GPTConfig,
    Recipe,
    TrainConfig,
    json_roundtrip,
    same_training,
    with_layout,
)
from factgpt.data import MixedDataset, NameDataset, read_questions
from factgpt.errors import FactgptError
from factgpt.evaluate import most_frequent_answer, score
from factgpt.probe import ProbeSchedule
from factgpt.recipes import BUDGETS
from factgpt.runtime import machine
from factgpt.stages import (
    ModelSpec,
    evaluate,
    knowledge_probe,
    load_corpus,
    load_pairs,
    mixed_pairs,
    run_training,
    starting_model,
)

PUBLISHED = {  # the study's dev accuracy (500 questions)
    "baseline": (25, 500), "vanilla_nopretrain": (10, 500), "vanilla_pretrain": (119, 500),
    "perceiver_pretrain": (41, 500),
}
ROWS = ("baseline", "vanilla_nopretrain", "vanilla_pretrain", "perceiver_pretrain")
ROW_TITLES = {
    "baseline": "always the most frequent answer",
    "vanilla_nopretrain": "vanilla, finetuned without pretraining",
    "vanilla_pretrain": "vanilla, pretrained + finetuned",
    "perceiver_pretrain": "perceiver, pretrained + finetuned",
}


@dataclass
class Files:
    corpus: Path  # pretraining text (also fixes the vocabulary)
    train: Path  # finetuning question<TAB>answer
    eval: Path  # labelled questions to score
    extra_eval: list[Path] = field(default_factory=list)  # more question files to predict (test inputs)


@dataclass
class Spread:
    """How varied a row's answers are. A model that retrieves facts gives many different answers; one
    that answers from the prior repeats a few, and its correct answers are among those few."""
    distinct: int  # different answers over all questions
    top: str  # the most frequent answer
    top_count: int  # how often it is given
    correct_in_top5: int  # correct answers that are one of the row's 5 most frequent answers


def spread(predictions: list[str], golds: list[str | None]) -> Spread:
    counts = Counter(predictions)
    top5 = {a for a, _ in counts.most_common(5)}
    top, n = counts.most_common(1)[0] if counts else ("", 0)
    return Spread(len(counts), top, n, sum(p == g and p in top5 for p, g in zip(predictions, golds)))


@dataclass
class RowResult:
    key: str
    seed: int
    correct: int
    total: int
    seconds: float
    spread: Spread | None = None

    @property
    def percent(self) -> float:
        return 100.0 * self.correct / self.total


def stage_corruption(stage: Stage) -> Corruption | None:
    """The span corruption a pretraining stage draws with (None for the other stages)."""
    return stage.recipe.corruption if stage.command == "pretrain" else None


def same_recipe(record: dict, model_identity: dict, tconf: TrainConfig,
                corruption: Corruption | None = None) -> bool:
    """Whether a recorded stage used this model and recipe (and, for pretraining, corruption).
    Records written before a setting existed lack it (it then had its default value) and spell
    `engine` as `path`."""
    if corruption is not None and record.get("corruption", asdict(Corruption())) != asdict(corruption):
        return False
    return (record.get("model") == json_roundtrip(model_identity)
            and same_training(record.get("train") or {}, json_roundtrip(asdict(tconf))))


@dataclass(frozen=True)
class Stage:
    """One stage of a trained row, and the `factgpt` command line that runs it as the table does.
    Checkpoint and prediction paths are file names in the table's folder."""
    command: str  # "pretrain", "finetune" or "evaluate"
    variant: str  # "vanilla" or "perceiver"
    recipe: Recipe
    seed: int
    files: Files
    tag: str  # the row and seed ("vanilla_pretrain_seed0"): names the stage's outputs
    n_docs: int  # documents in the pretraining corpus (they set final_tokens)
    vocab_size: int
    n_mixed_pairs: int = 0  # finetuning pairs mixed into every pretraining epoch (they count in final_tokens)
    pretrained: bool = False  # the row pretrains: its finetuning starts from the pretraining checkpoint

    @property
    def key(self) -> str:
        return f"{self.tag}.{self.command}"

    @property
    def perceiver(self) -> bool:
        return self.variant == "perceiver"

    @property
    def writes(self) -> str | None:
        """The checkpoint a training stage writes."""
        return None if self.command == "evaluate" else f"{self.key}.safetensors"

    @property
    def reads(self) -> str | None:
        """The checkpoint the stage starts from (None: a fresh model)."""
        if self.command == "evaluate":
            return f"{self.tag}.finetune.safetensors"
        return f"{self.tag}.pretrain.safetensors" if self.command == "finetune" and self.pretrained else None

    @property
    def outputs(self) -> str:
        """The predictions evaluate writes for the labelled questions."""
        return f"{self.tag}.{self.files.eval.stem}.predictions"

    def model_config(self) -> GPTConfig:
        return self.recipe.model_config(self.vocab_size, self.perceiver)

    def train_config(self) -> TrainConfig:
        if self.command == "pretrain":
            return self.recipe.pretrain_config(self.n_docs, self.seed, self.perceiver, self.n_mixed_pairs)
        return self.recipe.finetune_config(self.n_docs, self.pretrained, self.seed)

    def _values(self) -> dict[str, object]:
        """The value of every recipe flag for this stage (None: no such setting)."""
        r, m = self.recipe, self.model_config()
        if self.command == "evaluate":  # the model is the checkpoint's: only its m is checked
            return {"--bottleneck_dim": m.bottleneck_dim}
        t, c = self.train_config(), r.corruption
        pre = self.command == "pretrain"
        return {"--max_epochs": t.max_epochs, "--batch_size": t.batch_size,
                "--pretrain_lr" if pre else "--finetune_lr": t.learning_rate,
                "--final_tokens": t.final_tokens if pre else None, "--weight_decay": t.weight_decay,
                "--n_layer": m.n_layer, "--n_head": m.n_head, "--n_embd": m.n_embd, "--seed": t.seed,
                "--precision": t.precision, "--dropout": r.dropout, "--bottleneck_dim": m.bottleneck_dim,
                "--min_truncation": c.min_truncation if pre else None,
                "--max_truncation": c.max_truncation if pre else None,
                "--mask_fraction": c.mask_fraction if pre else None,
                "--probe_every": r.probe_every if pre else None,
                "--dropout_start_epoch": t.dropout_start_epoch if pre else None,
                "--finetune_frozen": None if pre else t.frozen}

    # shown always; the other flags where the recipe differs from the reference
    SHOWN = ("--max_epochs", "--batch_size", "--pretrain_lr", "--finetune_lr", "--final_tokens", "--n_layer",
             "--n_head", "--n_embd", "--seed", "--precision", "--dropout", "--bottleneck_dim")

    def argv(self) -> list[str]:
        """`factgpt` arguments that run this stage: `factgpt.cli` parses them into this stage's
        TrainConfig and GPTConfig (tested)."""
        f = self.files
        args = [self.command, self.variant, str(f.corpus)]
        if self.reads:
            args += ["--reading_params_path", self.reads]
        if self.command == "evaluate":
            args += ["--eval_corpus_path", str(f.eval), "--outputs_path", self.outputs]
        else:
            args += ["--writing_params_path", self.writes]
        reference = replace(self, recipe=REFERENCE)._values()
        for flag, value in self._values().items():
            if value is not None and (flag in self.SHOWN or value != reference[flag]):
                args += [flag, str(value)]
        if self.command != "evaluate" and self.train_config().shuffle:
            args.append("--shuffle")
        pre = self.command == "pretrain"
        if pre and self.recipe.mix_pairs:
            args.append("--mix_pairs")
        if self.command == "finetune" or (pre and (self.recipe.mix_pairs or self.recipe.probe_every)):
            args += ["--finetune_corpus_path", str(f.train)]
        return args


def row_stages(key: str, seed: int, recipe: Recipe, files: Files, n_docs: int, vocab_size: int,
               n_mixed_pairs: int = 0) -> list[Stage]:
    """A trained row's stages: pretrain (rows `*_pretrain`), finetune, evaluate."""
    pretrained = key.endswith("_pretrain")
    common = dict(variant="perceiver" if key.startswith("perceiver") else "vanilla", recipe=recipe, seed=seed,
                  files=files, tag=f"{key}_seed{seed}", n_docs=n_docs, vocab_size=vocab_size,
                  pretrained=pretrained, n_mixed_pairs=n_mixed_pairs)
    commands = ("pretrain", "finetune", "evaluate") if pretrained else ("finetune", "evaluate")
    return [Stage(command, **common) for command in commands]


def commit() -> str:
    """The short commit of this code; FACTGPT_COMMIT names it in a copy without .git (a GPU machine's)."""
    if os.environ.get("FACTGPT_COMMIT"):
        return os.environ["FACTGPT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def wilson(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a proportion, in percent."""
    if total == 0:
        return (0.0, 0.0)
    p = correct / total
    den = 1 + z * z / total
    mid = (p + z * z / (2 * total)) / den
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / den
    return (max(0.0, 100 * (mid - half)), min(100.0, 100 * (mid + half)))


class TableRun:
    """Runs (or resumes) the table's stages into `out`, recording each one."""

    def __init__(self, files: Files, recipe: Recipe, out: str | Path, *, device="cpu",
                 progress: bool = True, log=None, checkpoint_every: int = CHECKPOINT_EVERY,
                 layout: dict | None = None) -> None:
        self.files, self.recipe = files, recipe
        self.out = ensure_folder(out)
        self.device = torch.device(device)
        self.progress = progress
        self.say = log or (lambda *_: None)
        self.checkpoint_every = checkpoint_every  # steps between resume points of a training stage
        # how batches are laid out (TrainConfig's LAYOUT_FIELDS, e.g. group_tokens): the same
        # arithmetic in other shapes, so a record made with other ones still counts as the same recipe
        self.layout = dict(layout or {})
        unknown = set(self.layout) - set(LAYOUT_FIELDS)
        if unknown:
            raise ValueError(f"layout takes {', '.join(LAYOUT_FIELDS)}, not {', '.join(sorted(unknown))}")
        self.records_path = self.out / "stages.json"
        self.records: dict = {}
        if self.records_path.exists():
            fresh = "use another --out, or delete the file to run every stage again"
            try:
                self.records = json.loads(self.records_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise FactgptError(f"the stage records are not JSON ({e})", path=self.records_path,
                                   hint=fresh) from None
            if not isinstance(self.records, dict):
                raise FactgptError("the stage records are not a JSON object", path=self.records_path, hint=fresh)
        self.corpus = load_corpus(files.corpus, corruption=recipe.corruption)
        self.names = load_pairs(self.corpus, files.train)
        # the pairs mixed into pretraining (`mixed`), built once: they are counted for the schedule too
        self.mixed: NameDataset | None = mixed_pairs(self.corpus, files.train) if recipe.mix_pairs else None
        self.n_mixed_pairs = len(self.mixed) if self.mixed is not None else 0
        self.questions = read_questions(files.eval, require_answers=True)  # scored: every line needs its answer
        self.probe: ProbeSchedule | None = knowledge_probe(self.corpus, files.train, recipe.probe_every,
                                                            ask=recipe.mix_pairs)

    def _record(self, key: str, **info) -> None:
        info.update(commit=commit(), machine=machine(self.device), recipe=self.recipe.name)
        self.records[key] = info
        atomic_write_text(self.records_path, json.dumps(self.records, indent=1))

    def command_line(self, stage: Stage) -> str:
        return f"factgpt {shlex.join(stage.argv())}"

    def stages(self, key: str, seed: int) -> list[Stage]:
        return row_stages(key, seed, self.recipe, self.files, len(self.corpus), self.corpus.vocab_size,
                          self.n_mixed_pairs)

    def _train(self, stage: Stage) -> bool:
        """Pretrain or finetune, unless a finished run of the same recipe is recorded here; True
        when it trained. A record of another recipe is refused even without its checkpoint, or the
        row's old evaluation would be read back as this recipe's."""
        key, tconf = stage.key, with_layout(stage.train_config(), **self.layout)
        reads = self.out / stage.reads if stage.reads else None
        model = starting_model(ModelSpec(stage.variant, stage.recipe), self.corpus, self.files.corpus, stage.seed,
                               reads)
        ckpt = self.out / stage.writes
        if key in self.records:
            if not same_recipe(self.records[key], model.config.identity(), tconf, stage_corruption(stage)):
                raise FactgptError(f"{key} was run here before with another recipe", path=self.out,
                                   hint="use another --out, or delete the folder to start over")
            if ckpt.exists():
                self.say(f"{key}: done earlier, skipped")
                return False
        if stage.command == "pretrain":
            assert stage.recipe.mix_pairs == (self.mixed is not None), "stages come from this table's recipe"
            data = MixedDataset(self.corpus, self.mixed) if self.mixed is not None else self.corpus
            probe = self.probe
        else:
            data, probe = self.names, None
        resuming = resume_path_for(ckpt).exists()
        self.say(f"{key}: {tconf.max_epochs} epochs" + (" (resuming from its last resume point)" if resuming else ""))
        # run_training writes a resume point every `checkpoint_every` steps beside the checkpoint and
        # continues from it, so an interrupted stage loses at most that many steps.
        done = run_training(model, data, tconf, self.corpus, ckpt, stage=key, device=self.device,
                            progress=self.progress, checkpoint_every=self.checkpoint_every, resume=True,
                            probe=probe)
        st = done.state
        # st.seconds is the training time summed over every process that worked on the stage
        self._record(key, command=self.command_line(stage), seconds=round(st.seconds, 1), train=asdict(tconf),
                     model=model.config.identity(), losses=st.losses, tokens=st.tokens,
                     examples=st.examples, resumed_from_step=done.resumed_from, probes=st.probes,
                     precision=done.precision, corruption=asdict(self.corpus.corruption))
        return True

    def _evaluate(self, stage: Stage, *, again: bool = False) -> tuple[int, int, list[str]]:
        """(correct, total, predictions) on the labelled questions; the extra question files are
        predicted too. A recorded evaluation whose predictions exist is read back, unless `again`
        (its model was trained anew)."""
        f = self.files
        preds_path = self.out / stage.outputs
        if not again and stage.key in self.records and preds_path.exists():
            rec = self.records[stage.key]
            return rec["correct"], rec["total"], preds_path.read_text(encoding="utf-8").splitlines()
        te = time.perf_counter()
        extra = tuple((path, self.out / f"{stage.tag}.{path.stem}.predictions") for path in f.extra_eval)
        ev = evaluate(f.corpus, self.out / stage.reads, f.eval, preds_path, ModelSpec(stage.variant, stage.recipe),
                      device=self.device, corpus=self.corpus, questions=self.questions, extra=extra)
        s = ev.score
        self._record(stage.key, command=self.command_line(stage), seconds=round(time.perf_counter() - te, 1),
                     correct=s.correct, total=s.total)
        return s.correct, s.total, ev.predictions

    def baseline(self) -> RowResult:
        guess = most_frequent_answer(read_questions(self.files.train, require_answers=True))
        preds = [guess] * len(self.questions)
        s = score(self.questions, preds)
        if self.records.get("baseline", {}).get("answer") != guess:  # a record of the same guess is kept as run
            self._record("baseline", command=f"most frequent training answer: {guess!r}", seconds=0.0,
                         answer=guess)
        return RowResult("baseline", 0, s.correct, s.total, 0.0, self._spread(preds))

    def _spread(self, predictions: list[str]) -> Spread:
        return spread(predictions, [q.answer for q in self.questions])

    def _recorded(self, stage: Stage) -> bool:
        """A training stage recorded here with this stage's model and recipe."""
        rec = self.records.get(stage.key)
        return rec is not None and same_recipe(rec, stage.model_config().identity(), stage.train_config(),
                                               stage_corruption(stage))

    def trained_row(self, key: str, seed: int) -> RowResult:
        t0 = time.perf_counter()
        *training, evaluation = self.stages(key, seed)
        # A row evaluated here before, from stages of this recipe, is read back from its records and
        # predictions alone: the report can be regenerated without any checkpoint.
        done = evaluation.key in self.records and (self.out / evaluation.outputs).exists()
        trained = False
        if done and all(self._recorded(stage) for stage in training):
            for stage in training:
                self.say(f"{stage.key}: done earlier, skipped")
        else:
            for stage in training:
                trained = self._train(stage) or trained
        correct, total, preds = self._evaluate(evaluation, again=trained)
        return RowResult(key, seed, correct, total, time.perf_counter() - t0, self._spread(preds))

    def run(self, seeds: int = 1, rows=ROWS, first_seed: int = 0) -> list[RowResult]:
        results = []
        for key in rows:
            if key == "baseline":
                results.append(self.baseline())
                continue
            for seed in range(first_seed, first_seed + seeds):
                results.append(self.trained_row(key, seed))
        return results


@dataclass
class RowSummary:
    """One line of the table: a row key over its seeds."""
    key: str
    title: str
    seeds: int
    mean: float  # accuracy in percent, mean over seeds
    sd: float  # its standard deviation over seeds (0 for one seed)
    correct: int  # the first seed's correct answers
    total: int  # questions
    interval: tuple[float, float]  # 95% interval in percent; several seeds: from the lowest seed's low end
    # to the highest seed's high end (their answers are not independent draws, so not pooled)
    percents: list[float]  # every seed's accuracy
    spread: Spread | None = None  # the first seed's answers

    @classmethod
    def of(cls, results: list[RowResult]) -> RowSummary:
        first, pcts = results[0], [r.percent for r in results]
        # every seed's own interval together: it brackets their mean and each seed, and a published
        # figure outside it is outside every seed's
        each = [wilson(r.correct, r.total) for r in results]
        interval = (min(lo for lo, _ in each), max(hi for _, hi in each))
        return cls(first.key, ROW_TITLES[first.key], len(results), statistics.mean(pcts),
                   statistics.stdev(pcts) if len(pcts) > 1 else 0.0, first.correct, first.total,
                   interval, pcts, first.spread)


def summarize(results: list[RowResult]) -> list[RowSummary]:
    """One line per row key: mean, spread over seeds, and the seeds' 95% intervals together."""
    return [RowSummary.of([r for r in results if r.key == key]) for key in dict.fromkeys(r.key for r in results)]


def published_inside(s: RowSummary, published: tuple[int, int]) -> bool:
    """Whether the published figure lies inside our 95% interval (outside: more than one run's
    noise apart)."""
    lo, hi = s.interval
    return lo <= 100 * published[0] / published[1] <= hi


def compare(s: RowSummary, published: tuple[int, int]) -> str:
    """Our row against the published figure: the difference in points, and whether it is inside."""
    diff = s.mean - 100 * published[0] / published[1]
    return f"{diff:+.1f} points ({'within' if published_inside(s, published) else 'OUTSIDE'} our interval)"


def format_table(summary: list[RowSummary], published: dict | None = None) -> str:
    head = "| model | accuracy | 95% interval |" + (" published | difference |" if published else "")
    lines = [head, "|---|---|---|" + ("---|---|" if published else "")]
    for s in summary:
        acc = f"{s.mean:.1f}%"
        if s.seeds > 1:
            acc += f" ± {s.sd:.1f} ({s.seeds} seeds: {', '.join(f'{p:.1f}%' for p in s.percents)})"
        else:
            acc += f" ({s.correct}/{s.total})"
        lo, hi = s.interval
        line = f"| {s.title} | {acc} | {lo:.1f}–{hi:.1f}% |"
        if published:
            c, t = published[s.key]
            plo, phi = wilson(c, t)
            line += f" {100 * c / t:.1f}% ({c}/{t}; {plo:.1f}–{phi:.1f}%) | {compare(s, (c, t))} |"
        lines.append(line)
    return "\n".join(lines)


def format_spread(summary: list[RowSummary]) -> str:
    lines = ["| model | different answers | most frequent answer | correct answers among its 5 most frequent |",
             "|---|---|---|---|"]
    for s in summary:
        sp = s.spread
        if sp is not None:
            lines.append(f"| {s.title} | {sp.distinct} | {sp.top!r}, {sp.top_count} of {s.total} | "
                         f"{sp.correct_in_top5} of {s.correct} |")
    return "\n".join(lines)


def write_report(out: str | Path, summary: list[RowSummary], records: dict, *, title: str, budget_note: str,
                 published: dict | None) -> Path:
    """report.md and its figures in `out`: loss_curves.png, accuracy.png and, when a pretraining
    was probed, knowledge.png."""
    out = Path(out)
    probed = {k: r for k, r in records.items() if r.get("probes")}
    draw_losses(records, out / "loss_curves.png")
    if probed:
        draw_knowledge(probed, out / "knowledge.png")
    draw_accuracy(summary, published, out / "accuracy.png")
    path = out / "report.md"
    atomic_write_text(path, report_markdown(summary, records, title=title, budget_note=budget_note,
                                            published=published))
    return path


def draw_losses(records: dict, path: Path) -> None:
    """The training loss of every recorded stage against its optimiser steps."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, rec in records.items():
        if rec.get("losses"):
            ax.plot(rec["losses"], label=key, linewidth=0.8)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend(fontsize=6)
    ax.set_title("Training loss per stage")
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)


def draw_accuracy(summary: list[RowSummary], published: dict | None, path: Path) -> None:
    """Each row's accuracy with its 95% interval, and the published figures as dots."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [s.title for s in summary]
    ys = [s.mean for s in summary]
    errs = [[s.mean - s.interval[0] for s in summary], [s.interval[1] - s.mean for s in summary]]
    ax.barh(labels, ys, xerr=errs, color="#4a7", label="factgpt (mean over seeds, 95% interval)")
    several = [(p, s.title) for s in summary if s.seeds > 1 for p in s.percents]
    if several:  # each seed's own accuracy
        ax.scatter(*zip(*several), color="#174", marker="|", s=120, zorder=3, label="each seed")
    if published:
        ax.scatter([100 * published[s.key][0] / published[s.key][1] for s in summary], labels,
                   color="k", zorder=3, label="published")
    ax.set_xlabel("accuracy (%)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)


def report_markdown(summary: list[RowSummary], records: dict, *, title: str, budget_note: str,
                    published: dict | None) -> str:
    """report.md: the table, the verdict, what the models answer, the figures, the knowledge probe
    and the stages."""
    probed = {k: r for k, r in records.items() if r.get("probes")}
    misses = [s.title for s in summary if published and not published_inside(s, published[s.key])]
    verdict = ([f"Outside our 95% interval, so more than the noise of {summary[0].total} questions apart: "
                + "; ".join(misses) + ". A shorter budget than the reference's is the first suspect; the "
                "loss curves below show how far each stage got."] if misses else [])
    lines = [f"# {title}", "", budget_note, "", format_table(summary, published), "", *verdict, "",
             "## What the models answer", "",
             "A model that retrieves facts gives many different answers; one that answers from the prior "
             "repeats a few, and its correct answers are among them.", "", format_spread(summary), "",
             "![accuracy](accuracy.png)", "", "![loss curves](loss_curves.png)", "",
             *(knowledge_section(probed) if probed else []), *stages_section(records)]
    return "\n".join(lines) + "\n"


def stages_section(records: dict) -> list[str]:
    """Report lines: every stage's wall time, command, commit and machine."""
    lines = ["## Stages", "", "| stage | wall time | command | commit | machine |", "|---|---|---|---|---|"]
    for key, rec in records.items():
        lines.append(f"| {key} | {rec.get('seconds', 0):.1f} s | `{rec.get('command', '')}` | "
                     f"{rec.get('commit', '')} | {rec.get('machine', '')} |")
    return [*lines, "", "Configs (model and optimisation) of every trained stage are in `stages.json`."]


def knowledge_section(probed: dict) -> list[str]:
    """Report lines: when the facts arrive during pretraining (the held-out probe)."""
    asked = any("answered" in p for rec in probed.values() for p in rec["probes"])
    lines = ["## When the facts arrive", "",
             "The knowledge probe: the share of held-out training people (never dev) whose own wiki.txt line the "
             "pretrained model completes with their birthplace, by greedy decoding from the line up to the place.",
             *(["Where the finetuning pairs are mixed into pretraining, these people are left out of the mix and "
                "*answered* is the share of them the pretrained model answers `Where was NAME born?` correctly."]
               if asked else []),
             "", f"| stage | epoch | training time | loss (last step of the epoch) | probe |{' answered |' * asked}",
             f"|---|---|---|---|---|{'---|' * asked}"]
    for key, rec in probed.items():
        for p in rec["probes"]:
            loss = rec["losses"][p["step"] - 1] if p["step"] <= len(rec.get("losses", [])) else float("nan")
            answered = (f" {100 * p['answered']:.1f}% |" if "answered" in p else " |") if asked else ""
            lines.append(f"| {key} | {p['epoch']} | {p['seconds'] / 60:.1f} min | {loss:.3f} | "
                         f"{100 * p['known']:.1f}% |{answered}")
    return [*lines, "", "![knowledge](knowledge.png)", ""]


def draw_knowledge(probed: dict, path: Path) -> None:
    """Loss and probe against training minutes, side by side, one line per pretraining stage."""
    plt = pyplot()

    fig, (ax_loss, ax_probe) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, rec in probed.items():
        losses, seconds = rec.get("losses", []), rec.get("seconds", 0.0)
        if losses:  # steps spread evenly over the stage's training time
            ax_loss.plot([seconds / 60 * (i + 1) / len(losses) for i in range(len(losses))], losses, linewidth=0.6,
                         label=key)
        line, = ax_probe.plot([p["seconds"] / 60 for p in rec["probes"]], [100 * p["known"] for p in rec["probes"]],
                              marker="o", markersize=3, label=f"{key}: line completed")
        asked = [p for p in rec["probes"] if "answered" in p]
        if asked:  # the question itself, where pretraining mixed the pairs in
            ax_probe.plot([p["seconds"] / 60 for p in asked], [100 * p["answered"] for p in asked], marker="s",
                          markersize=3, linestyle="--", color=line.get_color(), label=f"{key}: question answered")
    ax_loss.set(xlabel="training minutes", ylabel="training loss", yscale="log", title="Loss")
    ax_probe.set(xlabel="training minutes", ylabel="held-out people (%)", title="Knowledge probe")
    ax_probe.legend(fontsize=6)
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)


def budget_note(recipe: Recipe, seeds: int, questions: int) -> str:
    """One paragraph saying how far the recipe is from the reference's (the `full` budget)."""
    full = REFERENCE
    share = 100 * recipe.pretrain_epochs / full.pretrain_epochs
    perceiver = recipe.perceiver_pretrain_epochs or recipe.pretrain_epochs
    return (f"Budget `{recipe.name}`: pretraining {recipe.pretrain_epochs} epochs ({share:.3g}% of the reference's "
            f"{full.pretrain_epochs}; perceiver {perceiver}, m = {recipe.bottleneck_dim}), cosine learning rate "
            f"reaching its floor after {recipe.pretrain_final_epochs:g} epochs' tokens (reference: "
            f"{full.pretrain_final_epochs:g}); finetuning {recipe.finetune_epochs} epochs after pretraining"
            + (f" (the parameters matching /{recipe.finetune_frozen}/ kept as pretrained)"
               if recipe.finetune_frozen else "")
            + f" and {recipe.finetune_epochs_scratch} without; {recipe.precision}; {seeds} seed(s); dev accuracy on "
            f"{questions} questions, greedy decoding.{recipe_differences(recipe, full)}")


def recipe_differences(recipe: Recipe, full: Recipe) -> str:
    """' Unlike the reference: ...' for the pretraining settings a recipe changes ('' if none)."""
    c, ref = recipe.corruption, full.corruption
    diffs = [f"{name} {mine:g} (reference {theirs:g})" for name, mine, theirs in (
        ("dropout", recipe.dropout, full.dropout), ("weight decay", recipe.weight_decay, full.weight_decay),
        ("batch", recipe.pretrain_batch, full.pretrain_batch), ("learning rate", recipe.pretrain_lr, full.pretrain_lr),
        ("shortest truncation", c.min_truncation, ref.min_truncation),
        ("mask fraction", c.mask_fraction, ref.mask_fraction)) if mine != theirs]
    diffs += ["a new example order every epoch"] if recipe.shuffle else []
    diffs += ([f"no dropout for the first {recipe.pretrain_dropout_start} epochs (late dropout)"]
              if recipe.pretrain_dropout_start else [])
    diffs += (["the finetuning pairs mixed into pretraining, all but the probe's held-out people"]
              if recipe.mix_pairs else [])
    return f" Pretraining unlike the reference: {'; '.join(diffs)}." if diffs else ""


def with_budget(name: str, **overrides) -> Recipe:
    return replace(BUDGETS[name], **{k: v for k, v in overrides.items() if v is not None})
