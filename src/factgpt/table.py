"""Running the study's results table: `factgpt demo` and `factgpt reproduce`.

A table is four rows: a most-frequent-answer baseline, vanilla finetuned without pretraining,
vanilla pretrained + finetuned, perceiver pretrained + finetuned. Each trained row is a chain of
stages (pretrain -> finetune -> evaluate); a stage whose outputs exist is skipped, so an
interrupted run picks up at the first unfinished stage. Every stage records its command line
(`Stage.argv`, which the `factgpt` parser reads back into the same configs), config, commit, machine
and wall time in OUT/stages.json; report.md, the loss curves and the accuracy chart are written from
those records (factgpt.report). The recipes are `factgpt.config.REFERENCE` and replacements of it
(`factgpt.recipes`).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

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
from factgpt.knobs import stage_flags
from factgpt.outputs import atomic_write_text, ensure_folder
from factgpt.probe import ProbeSchedule
from factgpt.report import ROWS, RowResult, Spread, spread
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


@dataclass
class Files:
    corpus: Path  # pretraining text (also fixes the vocabulary)
    train: Path  # finetuning question<TAB>answer
    eval: Path  # labelled questions to score
    extra_eval: list[Path] = field(default_factory=list)  # more question files to predict (test inputs)


def stage_corruption(stage: Stage) -> Corruption | None:
    """The span corruption a pretraining stage draws with (None for the other stages)."""
    return stage.recipe.pretrain.corruption if stage.command == "pretrain" else None


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

    def configs(self) -> dict[str, object]:
        """What the knobs read a stage's values from (factgpt.knobs.stage_flags)."""
        return {"train": self.train_config(), "model": self.model_config(), "recipe": self.recipe}

    def argv(self) -> list[str]:
        """`factgpt` arguments that run this stage: `factgpt.cli` parses them into this stage's
        TrainConfig and GPTConfig (tested). The knobs come from factgpt.knobs."""
        f = self.files
        args = [self.command, self.variant, str(f.corpus)]
        if self.reads:
            args += ["--reading_params_path", self.reads]
        if self.command == "evaluate":
            args += ["--eval_corpus_path", str(f.eval), "--outputs_path", self.outputs]
        else:
            args += ["--writing_params_path", self.writes]
        args += stage_flags(self.command, self.configs(), replace(self, recipe=REFERENCE).configs())
        p = self.recipe.pretrain
        if self.command == "finetune" or (self.command == "pretrain" and (p.mix_pairs or p.probe_every)):
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


def study_files(data_dir: str | Path) -> Files:
    """The study's files in `data_dir`; the test inputs are predicted too where present."""
    d = Path(data_dir)
    for name in ("wiki.txt", "birth_places_train.tsv", "birth_dev.tsv"):
        if not (d / name).is_file():
            raise FactgptError(f"{name} is missing", path=d, hint=f"run `factgpt data download --dest {d}`")
    extra = [d / "birth_test_inputs.tsv"] if (d / "birth_test_inputs.tsv").is_file() else []
    return Files(d / "wiki.txt", d / "birth_places_train.tsv", d / "birth_dev.tsv", extra)


def check_rows(rows) -> tuple[str, ...]:
    """Rows of the table, each known and named once (a row given twice would count as two seeds)."""
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise FactgptError(f"--rows: no row named {', '.join(unknown)}", hint=f"rows: {' '.join(ROWS)}")
    twice = sorted({r for r in rows if list(rows).count(r) > 1})
    if twice:
        raise FactgptError(f"--rows names {', '.join(twice)} more than once", hint="name each row once")
    return tuple(rows)


def read_records(path: Path) -> dict:
    """A table folder's stage records (stages.json; none yet: {})."""
    if not path.exists():
        return {}
    fresh = "use another --out, or delete the file to run every stage again"
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FactgptError(f"the stage records are not JSON ({e})", path=path, hint=fresh) from None
    if not isinstance(records, dict):
        raise FactgptError("the stage records are not a JSON object", path=path, hint=fresh)
    return records


def check_table_folder(out: str | Path, recipe: Recipe, texts: dict[str, str] | None = None) -> None:
    """Refuse, before anything is written into `out`, a table folder that holds stage records of
    another recipe or (`texts`: the files a run would write there, by name) other files of those
    names, so that a folder never comes to disagree with its own report."""
    out = Path(out)
    others = sorted({str(r.get("recipe")) for r in read_records(out / "stages.json").values()
                     if isinstance(r, dict) and r.get("recipe") not in (None, recipe.name)})
    if others:
        raise FactgptError(f"this folder holds a table of another recipe ({', '.join(others)}, not {recipe.name})",
                           path=out, hint="use another --out, or delete the folder to start over")
    for name, text in (texts or {}).items():
        path = out / name
        if path.is_file() and path.read_text(encoding="utf-8", errors="replace") != text:
            raise FactgptError(f"{name} here differs from what this run would write (another world)", path=out,
                               hint="use another --out, or delete the folder to start over")


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
        self.records: dict = read_records(self.records_path)
        self.corpus = load_corpus(files.corpus, corruption=recipe.pretrain.corruption)
        self.names = load_pairs(self.corpus, files.train)
        # the pairs mixed into pretraining (`mixed`), built once: they are counted for the schedule too
        self.mixed: NameDataset | None = mixed_pairs(self.corpus, files.train) if recipe.pretrain.mix_pairs else None
        self.n_mixed_pairs = len(self.mixed) if self.mixed is not None else 0
        self.questions = read_questions(files.eval, require_answers=True)  # scored: every line needs its answer
        self.probe: ProbeSchedule | None = knowledge_probe(self.corpus, files.train, recipe.pretrain.probe_every,
                                                            ask=recipe.pretrain.mix_pairs)

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
            assert stage.recipe.pretrain.mix_pairs == (self.mixed is not None), "stages come from this table's recipe"
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
                     precision=done.precision, kernels=done.kernels, corruption=asdict(self.corpus.corruption))
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
