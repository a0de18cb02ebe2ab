"""The table's statistics and report: each row over its seeds with a 95% interval, beside the
study's published figures; report.md, the loss curves, the accuracy chart and the knowledge probe,
written from the stage records alone (so a report regenerates without any checkpoint).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from factgpt.config import REFERENCE, Recipe, field_of
from factgpt.figures import pyplot, save_figure
from factgpt.knobs import knobs_of
from factgpt.outputs import atomic_write_text


def cell(text: object) -> str:
    """Text as one markdown table cell: its | escaped (code spans too split a table row on a bare |)
    and line breaks made spaces."""
    return str(text).replace("|", "\\|").replace("\n", " ")


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


def wilson(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a proportion, in percent."""
    if total == 0:
        return (0.0, 0.0)
    p = correct / total
    den = 1 + z * z / total
    mid = (p + z * z / (2 * total)) / den
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / den
    return (max(0.0, 100 * (mid - half)), min(100.0, 100 * (mid + half)))


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
            lines.append(f"| {s.title} | {sp.distinct} | {cell(repr(sp.top))}, {sp.top_count} of {s.total} | "
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
    save_figure(fig, path)
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
    save_figure(fig, path)
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
        lines.append(f"| {key} | {rec.get('seconds', 0):.1f} s | `{cell(rec.get('command', ''))}` | "
                     f"{cell(rec.get('commit', ''))} | {cell(rec.get('machine', ''))} |")
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
    save_figure(fig, path)
    plt.close(fig)


def demo_note(summary: list[RowSummary], recipe: str, seed: int) -> str:
    """What the demo's table shows, in two sentences from its own figures, and how its rows map to the
    study's (on wiki.txt the study published 23.8% pretrained, 2.0% without, 8.2% for the perceiver,
    5.0% for always London)."""
    rows = {s.key: s for s in summary}
    if not {"vanilla_pretrain", "vanilla_nopretrain", "perceiver_pretrain", "baseline"} <= rows.keys():
        return f"Held-out accuracy (recipe `{recipe}`, world seed {seed})."
    pre, scratch, perceiver, base = (rows[k] for k in ("vanilla_pretrain", "vanilla_nopretrain",
                                                        "perceiver_pretrain", "baseline"))
    def against_scratch(row: RowSummary) -> str:  # what the 95% intervals say, not the point estimates
        if row.interval[0] > scratch.interval[1]:
            return "apart from and above"
        return "overlapping, with a higher estimate than" if row.mean > scratch.mean else "not above"

    return (f"Held-out accuracy on {pre.total} invented people whom only the pretraining corpus tells about "
            f"(recipe `{recipe}`, world seed {seed}). Pretrained and then finetuned on the other people, vanilla "
            f"answers {pre.mean:.1f}% of them and the perceiver {perceiver.mean:.1f}%, against {scratch.mean:.1f}% "
            f"finetuned without pretraining (95% intervals: vanilla's {against_scratch(pre)} no pretraining's, "
            f"the perceiver's {against_scratch(perceiver)} it) and {base.mean:.1f}% for always the most frequent "
            "birthplace: the study's four rows in miniature, where on wiki.txt pretraining gave 23.8% against 2.0% "
            "without it, the perceiver 8.2%, and always London 5.0%.")


def budget_note(recipe: Recipe, seeds: int, questions: int) -> str:
    """One paragraph saying how far the recipe is from the reference's (the `full` budget)."""
    p, f, full = recipe.pretrain, recipe.finetune, REFERENCE
    share = 100 * p.max_epochs / full.pretrain.max_epochs
    return (f"Budget `{recipe.name}`: pretraining {p.max_epochs} epochs ({share:.3g}% of the reference's "
            f"{full.pretrain.max_epochs}; perceiver {recipe.pretrain_epochs_of(True)}, m = {recipe.bottleneck_dim}), "
            f"cosine learning rate reaching its floor after {p.final_epochs:g} epochs' tokens (reference: "
            f"{full.pretrain.final_epochs:g}); finetuning {f.max_epochs} epochs after pretraining"
            + (f" (the parameters matching /{f.frozen}/ kept as pretrained)" if f.frozen else "")
            + f" and {f.max_epochs_scratch} without; {recipe.precision}; {seeds} seed(s); dev accuracy on "
            f"{questions} questions, greedy decoding.{recipe_differences(recipe)}")


# knobs the budget note states in its own words, or that do not change what pretraining learns
_NOTED = ("max_epochs", "final_tokens", "precision", "bottleneck_dim", "probe_every")


def recipe_differences(recipe: Recipe) -> str:
    """' Pretraining unlike the reference: ...': every pretraining knob (factgpt.knobs) whose value
    in `recipe` differs from the reference recipe's, as its flag ('' if none)."""
    diffs = []
    for k in knobs_of("pretrain"):
        paths = k.paths("pretrain")
        if not paths or k.name in _NOTED:
            continue
        mine, theirs = field_of(recipe, paths[0]), field_of(REFERENCE, paths[0])
        if mine != theirs:
            diffs.append(f"--{k.name}" if k.type is None else f"--{k.name} {mine} (reference {theirs})")
    return f" Pretraining unlike the reference: {'; '.join(diffs)}." if diffs else ""
