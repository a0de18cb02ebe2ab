"""The study's results table, end to end: `factgpt demo` and `factgpt reproduce`.

A table is four rows: a most-frequent-answer baseline, vanilla finetuned without pretraining,
vanilla pretrained + finetuned, perceiver pretrained + finetuned. Each trained row is a chain of
stages (pretrain -> finetune -> evaluate); a stage whose outputs exist is skipped, so an
interrupted run picks up at the first unfinished stage. Every stage records its command-line
equivalent, config, commit, machine and wall time in OUT/stages.json; report.md, the loss curves
and the accuracy chart are written from those records.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from factgpt.atomic import atomic_write_text
from factgpt.checkpoint import load_checkpoint, resume_path_for
from factgpt.config import BLOCK_SIZE, GPTConfig, TrainConfig, json_roundtrip
from factgpt.data import (
    REFERENCE_CORRUPTION,
    CharCorruptionDataset,
    Corruption,
    MixedDataset,
    NameDataset,
    read_questions,
    read_text,
)
from factgpt.errors import FactgptError
from factgpt.evaluate import Score, most_frequent_answer, predict, score
from factgpt.model import GPT
from factgpt.probe import ProbeSchedule, probe_items, split_heldout
from factgpt.runtime import machine
from factgpt.stages import run_training

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
class Recipe:
    """Model and optimisation for one table; `full` is the reference recipe."""
    name: str
    n_layer: int = 4
    n_head: int = 8
    n_embd: int = 256
    dropout: float = 0.1
    bottleneck_dim: int = 64  # the reference commands use 64
    pretrain_epochs: int = 650
    pretrain_batch: int = 128
    pretrain_lr: float = 6e-3
    pretrain_final_epochs: float = 200.0  # cosine floor after this many epochs' tokens (ref: 200)
    perceiver_pretrain_epochs: int | None = None  # a shorter perceiver pretraining (None: the same)
    finetune_epochs: int = 10  # after pretraining
    finetune_epochs_scratch: int = 75  # without pretraining
    finetune_batch: int = 256
    finetune_lr: float = 6e-4
    precision: str = "auto"  # bf16 where native (the record says which ran), else fp32
    weight_decay: float = 0.1  # AdamW decay in pretraining (finetuning keeps the reference's 0.1)
    shuffle: bool = False  # a new example order every pretraining epoch (reference: file order)
    corruption: Corruption = REFERENCE_CORRUPTION  # span-corruption parameters (reference: the defaults)
    mix_pairs: bool = False  # mix the finetuning pairs into pretraining (the `mixed` row)
    probe_every: int = 0  # epochs between knowledge probes during pretraining (0: none)

    def model_config(self, vocab_size: int, perceiver: bool) -> GPTConfig:
        d = self.dropout
        return GPTConfig(vocab_size=vocab_size, block_size=BLOCK_SIZE, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, embd_pdrop=d, resid_pdrop=d,
                         attn_pdrop=d, perceiver=perceiver,
                         bottleneck_dim=self.bottleneck_dim if perceiver else None)


BUDGETS = {
    # the reference recipe
    "full": Recipe("full"),
    # a shortened pretraining whose cosine ends with the run (see docs/results.md)
    "quick": Recipe("quick", pretrain_epochs=100, pretrain_final_epochs=100, precision="bf16"),
    # Facts within about an hour on 2 CPU cores (see docs/results.md): no dropout or weight decay
    # (they slow memorisation), a new order every epoch, batch 64 at lr 3e-3 with the cosine ending
    # with the run, and truncations of 64-112 characters, which keep the birthplace (most sit 32-63
    # characters in) in most examples; the held-out probe every 5 epochs.
    "fast": Recipe("fast", dropout=0.0, weight_decay=0.0, shuffle=True, pretrain_epochs=70, pretrain_batch=64,
                   pretrain_lr=3e-3, pretrain_final_epochs=70, corruption=Corruption(min_truncation=64),
                   probe_every=5),
    # `fast` with the 2,000 finetuning pairs mixed into pretraining (an epoch is then ~1.4x longer)
    "mixed": Recipe("mixed", dropout=0.0, weight_decay=0.0, shuffle=True, pretrain_epochs=50, pretrain_batch=64,
                    pretrain_lr=3e-3, pretrain_final_epochs=50, corruption=Corruption(min_truncation=64),
                    probe_every=5, mix_pairs=True),
    # seconds: checks that every stage and every report file works
    "smoke": Recipe("smoke", n_layer=2, n_head=2, n_embd=32, pretrain_epochs=1, pretrain_final_epochs=1,
                    finetune_epochs=1, finetune_epochs_scratch=1, bottleneck_dim=8),
}

# The demo's world is small, so its recipe differs from the study's where measurement showed it
# must: no dropout, small batches (memorising a few hundred facts needs many steps), and a gentle
# finetuning (lr 1e-4): at 5e-4 the model memorises the finetuning answers and held-out accuracy
# falls from 5/20 to 1/20, although the pretrained model completes "NAME was born in" correctly.
DEMO = Recipe("demo", n_layer=2, n_head=4, n_embd=256, dropout=0.0, bottleneck_dim=48,
              pretrain_epochs=80, pretrain_batch=8, pretrain_lr=1e-3, pretrain_final_epochs=80,
              perceiver_pretrain_epochs=40,
              finetune_epochs=10, finetune_epochs_scratch=10, finetune_batch=16, finetune_lr=1e-4,
              precision="bf16")


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


# How a stage runs, not what it computes: a finished stage recorded with other values still counts
LAYOUT_FIELDS = ("layout", "group_tokens", "log_every", "compile")


def same_recipe(record: dict, model_identity: dict, tconf: TrainConfig) -> bool:
    """Whether a recorded stage used this model and recipe. Records written before a setting
    existed lack it (it then had its default value) and spell `engine` as `path`."""
    train = dict(record.get("train") or {})
    if "path" in train:
        train["engine"] = train.pop("path")
    mine = json_roundtrip(asdict(tconf))
    defaults = json_roundtrip(asdict(TrainConfig(max_epochs=0, batch_size=0, learning_rate=0.0)))
    for key in mine:
        if key in LAYOUT_FIELDS:
            train.pop(key, None)
        elif key not in train:
            train[key] = defaults[key]
    mine = {k: v for k, v in mine.items() if k not in LAYOUT_FIELDS}
    return record.get("model") == json_roundtrip(model_identity) and train == mine


def pretrain_flags(r: Recipe, train_file: Path) -> str:
    """The command-line flags of the recipe's pretraining settings that differ from the reference."""
    c, ref = r.corruption, REFERENCE_CORRUPTION
    flags = [f"--weight_decay {r.weight_decay}"] if r.weight_decay != 0.1 else []
    flags += ["--shuffle"] if r.shuffle else []
    flags += [f"--min_truncation {c.min_truncation}"] if c.min_truncation != ref.min_truncation else []
    flags += [f"--max_truncation {c.max_truncation}"] if c.max_truncation != ref.max_truncation else []
    flags += [f"--mask_fraction {c.mask_fraction}"] if c.mask_fraction != ref.mask_fraction else []
    flags += ["--mix_pairs"] if r.mix_pairs else []
    flags += [f"--probe_every {r.probe_every}"] if r.probe_every else []
    flags += [f"--finetune_corpus_path {train_file}"] if r.mix_pairs or r.probe_every else []
    return "".join(" " + f for f in flags)


def commit() -> str:
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
                 progress: bool = True, log=None, command_prefix: str = "factgpt",
                 checkpoint_every: int = 200) -> None:
        self.files, self.recipe = files, recipe
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(device)
        self.progress = progress
        self.say = log or (lambda *_: None)
        self.prefix = command_prefix
        self.checkpoint_every = checkpoint_every  # steps between resume points of a training stage
        self.records_path = self.out / "stages.json"
        self.records: dict = json.loads(self.records_path.read_text()) if self.records_path.exists() else {}
        text = read_text(files.corpus)
        self.corpus = CharCorruptionDataset(text, BLOCK_SIZE, source=files.corpus, corruption=recipe.corruption)
        self.names = NameDataset(self.corpus, read_text(files.train), source=files.train)
        self.questions = read_questions(files.eval)
        self.probe = None
        if recipe.probe_every:  # the held-out training people: settings are chosen on them, not on dev
            heldout = split_heldout(read_questions(files.train, require_answers=True))[1]
            self.probe = ProbeSchedule(recipe.probe_every, probe_items(heldout, text, max_prefix=self.corpus.max_len))

    def _record(self, key: str, **info) -> None:
        info.update(commit=commit(), machine=machine(), recipe=self.recipe.name)
        self.records[key] = info
        atomic_write_text(self.records_path, json.dumps(self.records, indent=1))

    def _train(self, key: str, model: GPT, dataset, tconf: TrainConfig, command: str,
               probe: ProbeSchedule | None = None) -> Path:
        ckpt = self.out / f"{key}.safetensors"
        if key in self.records and ckpt.exists():
            rec = self.records[key]
            if not same_recipe(rec, model.config.identity(), tconf):
                raise FactgptError(f"{key} was run here before with another recipe", path=self.out,
                                   hint="use another --out, or delete the folder to start over")
            self.say(f"{key}: done earlier, skipped")
            return ckpt
        resuming = resume_path_for(ckpt).exists()
        self.say(f"{key}: {tconf.max_epochs} epochs" + (" (resuming from its last resume point)" if resuming else ""))
        # run_training writes a resume point every `checkpoint_every` steps beside the checkpoint and
        # continues from it, so an interrupted stage loses at most that many steps.
        done = run_training(model, dataset, tconf, self.corpus, ckpt, stage=key, device=self.device,
                            progress=self.progress, checkpoint_every=self.checkpoint_every, resume=True,
                            probe=probe)
        st = done.state
        # st.seconds is the training time summed over every process that worked on the stage
        self._record(key, command=command, seconds=round(st.seconds, 1), train=asdict(tconf),
                     model=model.config.identity(), losses=st.losses, tokens=st.tokens,
                     examples=st.examples, resumed_from_step=done.resumed_from, probes=st.probes,
                     precision=done.precision, corruption=asdict(self.corpus.corruption))
        return ckpt

    def baseline(self) -> RowResult:
        guess = most_frequent_answer(read_questions(self.files.train, require_answers=True))
        preds = [guess] * len(self.questions)
        s = score(self.questions, preds)
        self._record("baseline", command=f"most frequent training answer: {guess!r}", seconds=0.0,
                     answer=guess)
        return RowResult("baseline", 0, s.correct, s.total, 0.0, self._spread(preds))

    def _spread(self, predictions: list[str]) -> Spread:
        return spread(predictions, [q.answer for q in self.questions])

    def trained_row(self, key: str, seed: int) -> RowResult:
        r, f = self.recipe, self.files
        perceiver = key.startswith("perceiver")
        variant = "perceiver" if perceiver else "vanilla"
        tag = f"{key}_seed{seed}"
        cfg = r.model_config(self.corpus.vocab_size, perceiver)
        dims = (f"--n_layer {r.n_layer} --n_head {r.n_head} --n_embd {r.n_embd} --seed {seed} "
                f"--precision {r.precision} --dropout {r.dropout}"
                + (f" --bottleneck_dim {r.bottleneck_dim}" if perceiver else ""))
        pre_ckpt = None
        t0 = time.perf_counter()
        if key.endswith("_pretrain"):
            torch.manual_seed(seed)
            epochs = r.perceiver_pretrain_epochs if perceiver and r.perceiver_pretrain_epochs else r.pretrain_epochs
            final = int(r.pretrain_final_epochs * epochs / r.pretrain_epochs * len(self.corpus) * BLOCK_SIZE)
            tconf = TrainConfig(max_epochs=epochs, batch_size=r.pretrain_batch,
                                learning_rate=r.pretrain_lr, final_tokens=final, seed=seed,
                                precision=r.precision, weight_decay=r.weight_decay, shuffle=r.shuffle)
            cmd = (f"{self.prefix} pretrain {variant} {f.corpus} --writing_params_path {tag}.pretrain "
                   f"--max_epochs {epochs} --batch_size {r.pretrain_batch} --pretrain_lr "
                   f"{r.pretrain_lr} --final_tokens {final} {dims}{pretrain_flags(r, f.train)}")
            data = MixedDataset(self.corpus, self.names) if r.mix_pairs else self.corpus
            pre_ckpt = self._train(f"{tag}.pretrain", GPT(cfg), data, tconf, cmd, self.probe)
        torch.manual_seed(seed)
        model = load_checkpoint(pre_ckpt).build_model() if pre_ckpt else GPT(cfg)
        epochs = r.finetune_epochs if pre_ckpt else r.finetune_epochs_scratch
        tconf = TrainConfig(max_epochs=epochs, batch_size=r.finetune_batch, learning_rate=r.finetune_lr,
                            final_tokens=200 * len(self.corpus) * BLOCK_SIZE, seed=seed, precision=r.precision)
        cmd = (f"{self.prefix} finetune {variant} {f.corpus} --finetune_corpus_path {f.train} "
               + (f"--reading_params_path {tag}.pretrain " if pre_ckpt else "")
               + f"--writing_params_path {tag}.finetune --max_epochs {epochs} --batch_size {r.finetune_batch} "
               f"--finetune_lr {r.finetune_lr} {dims}")
        ft_ckpt = self._train(f"{tag}.finetune", model, self.names, tconf, cmd)
        eval_key = f"{tag}.evaluate"
        preds_path = self.out / f"{tag}.{f.eval.stem}.predictions"
        if eval_key in self.records and preds_path.exists():
            rec = self.records[eval_key]
            preds = preds_path.read_text(encoding="utf-8").splitlines()
            return RowResult(key, seed, rec["correct"], rec["total"], time.perf_counter() - t0, self._spread(preds))
        te = time.perf_counter()
        model = load_checkpoint(ft_ckpt).build_model().to(self.device)
        preds = predict(model, self.questions, self.corpus.vocab, source=f.eval)
        atomic_write_text(preds_path, "".join(p + "\n" for p in preds))
        for extra in f.extra_eval:
            qs = read_questions(extra)
            extra_preds = predict(model, qs, self.corpus.vocab, source=extra)
            atomic_write_text(self.out / f"{tag}.{extra.stem}.predictions", "".join(p + "\n" for p in extra_preds))
        s: Score = score(self.questions, preds)
        self._record(eval_key, command=f"{self.prefix} evaluate {variant} {f.corpus} --reading_params_path "
                     f"{tag}.finetune --eval_corpus_path {f.eval} {dims}", seconds=round(time.perf_counter() - te, 1),
                     correct=s.correct, total=s.total)
        return RowResult(key, seed, s.correct, s.total, time.perf_counter() - t0, self._spread(preds))

    def run(self, seeds: int = 1, rows=ROWS) -> list[RowResult]:
        results = []
        for key in rows:
            if key == "baseline":
                results.append(self.baseline())
                continue
            for seed in range(seeds):
                results.append(self.trained_row(key, seed))
        return results


def summarize(results: list[RowResult]) -> list[dict]:
    """One line per row key: mean, spread over seeds, and the 95% interval of the first seed."""
    out = []
    for key in dict.fromkeys(r.key for r in results):
        rs = [r for r in results if r.key == key]
        pcts = [r.percent for r in rs]
        out.append({"key": key, "title": ROW_TITLES[key], "seeds": len(rs), "mean": statistics.mean(pcts),
                    "sd": statistics.stdev(pcts) if len(pcts) > 1 else 0.0, "correct": rs[0].correct,
                    "total": rs[0].total, "interval": wilson(rs[0].correct, rs[0].total), "all": pcts,
                    "spread": rs[0].spread})
    return out


def published_inside(s: dict, published: tuple[int, int]) -> bool:
    """Whether the published figure lies inside our 95% interval (outside: more than one run's
    noise apart)."""
    lo, hi = s["interval"]
    return lo <= 100 * published[0] / published[1] <= hi


def compare(s: dict, published: tuple[int, int]) -> str:
    """Our row against the published figure: the difference in points, and whether it is inside."""
    diff = s["mean"] - 100 * published[0] / published[1]
    return f"{diff:+.1f} points ({'within' if published_inside(s, published) else 'OUTSIDE'} our interval)"


def format_table(summary: list[dict], published: dict | None = None) -> str:
    head = "| model | accuracy | 95% interval |" + (" published | difference |" if published else "")
    lines = [head, "|---|---|---|" + ("---|---|" if published else "")]
    for s in summary:
        acc = f"{s['mean']:.1f}%"
        if s["seeds"] > 1:
            acc += f" ± {s['sd']:.1f} ({s['seeds']} seeds)"
        else:
            acc += f" ({s['correct']}/{s['total']})"
        lo, hi = s["interval"]
        line = f"| {s['title']} | {acc} | {lo:.1f}–{hi:.1f}% |"
        if published:
            c, t = published[s["key"]]
            plo, phi = wilson(c, t)
            line += f" {100 * c / t:.1f}% ({c}/{t}; {plo:.1f}–{phi:.1f}%) | {compare(s, (c, t))} |"
        lines.append(line)
    return "\n".join(lines)


def format_spread(summary: list[dict]) -> str:
    lines = ["| model | different answers | most frequent answer | correct answers among its 5 most frequent |",
             "|---|---|---|---|"]
    for s in summary:
        sp: Spread | None = s.get("spread")
        if sp is not None:
            lines.append(f"| {s['title']} | {sp.distinct} | {sp.top!r}, {sp.top_count} of {s['total']} | "
                         f"{sp.correct_in_top5} of {s['correct']} |")
    return "\n".join(lines)


def write_report(out: str | Path, summary: list[dict], records: dict, *, title: str, budget_note: str,
                 published: dict | None) -> Path:
    """report.md, loss_curves.png and accuracy.png in `out`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
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
    fig.savefig(out / "loss_curves.png", dpi=120)
    plt.close(fig)

    probed = {k: r for k, r in records.items() if r.get("probes")}
    if probed:
        draw_knowledge(probed, out / "knowledge.png")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [s["title"] for s in summary]
    ys = [s["mean"] for s in summary]
    errs = [[s["mean"] - s["interval"][0] for s in summary], [s["interval"][1] - s["mean"] for s in summary]]
    ax.barh(labels, ys, xerr=errs, color="#4a7", label="factgpt (95% interval)")
    if published:
        ax.scatter([100 * published[s["key"]][0] / published[s["key"]][1] for s in summary], labels,
                   color="k", zorder=3, label="published")
    ax.set_xlabel("accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=120)
    plt.close(fig)

    misses = [s["title"] for s in summary if published and not published_inside(s, published[s["key"]])]
    verdict = ([f"Outside our 95% interval, so more than the noise of {summary[0]['total']} questions apart: "
                + "; ".join(misses) + ". A shorter budget than the reference's is the first suspect; the "
                "loss curves below show how far each stage got."] if misses else [])
    lines = [f"# {title}", "", budget_note, "", format_table(summary, published), "", *verdict, "",
             "## What the models answer", "",
             "A model that retrieves facts gives many different answers; one that answers from the prior "
             "repeats a few, and its correct answers are among them.", "", format_spread(summary), "",
             "![accuracy](accuracy.png)", "", "![loss curves](loss_curves.png)", "",
             *(knowledge_section(probed) if probed else []), "## Stages", "",
             "| stage | wall time | command | commit | machine |", "|---|---|---|---|---|"]
    for key, rec in records.items():
        lines.append(f"| {key} | {rec.get('seconds', 0):.1f} s | `{rec.get('command', '')}` | "
                     f"{rec.get('commit', '')} | {rec.get('machine', '')} |")
    lines += ["", "Configs (model and optimisation) of every trained stage are in `stages.json`."]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def knowledge_section(probed: dict) -> list[str]:
    """Report lines: when the facts arrive during pretraining (the held-out probe)."""
    lines = ["## When the facts arrive", "",
             "The knowledge probe: the share of held-out training people (never dev) whose own wiki.txt line the "
             "pretrained model completes with their birthplace, by greedy decoding from the line up to the place.",
             "", "| stage | epoch | training time | loss (last step of the epoch) | probe |", "|---|---|---|---|---|"]
    for key, rec in probed.items():
        for p in rec["probes"]:
            loss = rec["losses"][p["step"] - 1] if p["step"] <= len(rec.get("losses", [])) else float("nan")
            lines.append(f"| {key} | {p['epoch']} | {p['seconds'] / 60:.1f} min | {loss:.3f} | "
                         f"{100 * p['known']:.1f}% |")
    return [*lines, "", "![knowledge](knowledge.png)", ""]


def draw_knowledge(probed: dict, path: Path) -> None:
    """Loss and probe against training minutes, side by side, one line per pretraining stage."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_probe) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, rec in probed.items():
        losses, seconds = rec.get("losses", []), rec.get("seconds", 0.0)
        if losses:  # steps spread evenly over the stage's training time
            ax_loss.plot([seconds / 60 * (i + 1) / len(losses) for i in range(len(losses))], losses, linewidth=0.6,
                         label=key)
        ax_probe.plot([p["seconds"] / 60 for p in rec["probes"]], [100 * p["known"] for p in rec["probes"]],
                      marker="o", markersize=3, label=key)
    ax_loss.set(xlabel="training minutes", ylabel="training loss", yscale="log", title="Loss")
    ax_probe.set(xlabel="training minutes", ylabel="held-out people known (%)", title="Knowledge probe")
    ax_probe.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def budget_note(recipe: Recipe, seeds: int, questions: int) -> str:
    """One paragraph saying how far the recipe is from the reference's (the `full` budget)."""
    full = BUDGETS["full"]
    share = 100 * recipe.pretrain_epochs / full.pretrain_epochs
    perceiver = recipe.perceiver_pretrain_epochs or recipe.pretrain_epochs
    return (f"Budget `{recipe.name}`: pretraining {recipe.pretrain_epochs} epochs ({share:.3g}% of the reference's "
            f"{full.pretrain_epochs}; perceiver {perceiver}, m = {recipe.bottleneck_dim}), cosine learning rate "
            f"reaching its floor after {recipe.pretrain_final_epochs:g} epochs' tokens (reference: "
            f"{full.pretrain_final_epochs:g}); finetuning {recipe.finetune_epochs} epochs after pretraining and "
            f"{recipe.finetune_epochs_scratch} without; {recipe.precision}; {seeds} seed(s); dev accuracy on "
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
    diffs += ["the finetuning pairs mixed into pretraining"] if recipe.mix_pairs else []
    return f" Pretraining unlike the reference: {'; '.join(diffs)}." if diffs else ""


def with_budget(name: str, **overrides) -> Recipe:
    return replace(BUDGETS[name], **{k: v for k, v in overrides.items() if v is not None})
