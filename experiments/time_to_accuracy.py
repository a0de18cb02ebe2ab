"""Time to accuracy: the knowledge probe and dev accuracy against wall-clock minutes, one line or
point per recipe, read from the stages.json records that `factgpt reproduce` writes.

    python experiments/time_to_accuracy.py --out records/time_to_accuracy.png \\
        quick=records/2026-11-27_quick fast70=records/2026-11-28_fast70 fast300=records/2026-11-28_fast300 \\
        mixed200=records/2026-11-28_mixed200 fast430=records/2026-11-28_fast430 fast=records/2026-11-28_fast \\
        fast=records/2026-11-28_fast_perceiver mixed=records/2026-11-28_mixed

A row's dev point sits at its pretraining + finetuning + evaluation seconds; the probe curve at the
pretraining seconds when each probe ran (dashed: held-out people asked the question itself, where
the pairs were mixed into pretraining). Every figure comes from the records, none is typed in.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from factgpt.figures import pyplot, save_figure


def rows(folder: Path) -> list[dict]:
    """One dict per pretrained row and seed: its probe curve, its dev accuracy and total minutes."""
    records = json.loads((folder / "stages.json").read_text())
    out = []
    for key, rec in records.items():
        if not key.endswith(".pretrain"):
            continue
        tag = key[: -len(".pretrain")]
        fine, ev = records.get(f"{tag}.finetune"), records.get(f"{tag}.evaluate")
        total = rec["seconds"] + (fine or {}).get("seconds", 0) + (ev or {}).get("seconds", 0)
        out.append({"tag": tag, "probes": rec.get("probes", []), "minutes": total / 60,
                    "dev": 100 * ev["correct"] / ev["total"] if ev else None})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the PNG to write")
    ap.add_argument("runs", nargs="+", help="LABEL=FOLDER with a stages.json")
    args = ap.parse_args()

    plt = pyplot()
    fig, (ax_probe, ax_dev) = plt.subplots(1, 2, figsize=(10, 4))
    runs = [(label, r) for label, folder in (spec.split("=", 1) for spec in args.runs) for r in rows(Path(folder))]
    palette = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20").colors  # one colour per run in both panels
    for n, (label, r) in enumerate(runs):
        name, color = f"{label}: {r['tag']}", palette[n % len(palette)]
        if r["probes"]:
            ax_probe.plot([p["seconds"] / 60 for p in r["probes"]], [100 * p["known"] for p in r["probes"]],
                          marker="o", markersize=3, color=color, label=name)
            asked = [p for p in r["probes"] if "answered" in p]  # pairs mixed in: the question itself
            if asked:
                ax_probe.plot([p["seconds"] / 60 for p in asked], [100 * p["answered"] for p in asked],
                              marker="s", markersize=3, linestyle="--", color=color,
                              label=f"{name}, question answered")
        if r["dev"] is not None:
            ax_dev.scatter([r["minutes"]], [r["dev"]], color=color, label=name, zorder=3)
            print(f"{name}: dev {r['dev']:.1f}% after {r['minutes']:.1f} min end to end"
                  + (f"; last probe {100 * r['probes'][-1]['known']:.1f}%" if r["probes"] else ""))
    ax_dev.axhline(23.8, color="k", linestyle="--", linewidth=0.8, label="published, 650 epochs (23.8%)")
    ax_probe.set(xlabel="pretraining minutes (2 CPU cores)", ylabel="held-out people known (%)",
                 title="Knowledge probe during pretraining")
    ax_dev.set(xlabel="minutes, pretrain + finetune + evaluate", ylabel="dev accuracy (%)",
               title="Dev accuracy against time")
    for ax in (ax_probe, ax_dev):
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
