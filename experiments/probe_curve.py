"""The knowledge probe's points kept in pretraining checkpoints or resume points: one line per probe,
so a run's curve can be read (or sent back from a GPU machine) without TensorBoard.

    python experiments/probe_curve.py runs/t64/pretrain.safetensors runs/mixd/pretrain.safetensors.resume
"""

from __future__ import annotations

import argparse

from factgpt.checkpoint import load_checkpoint, load_training_state


def progress_of(path: str) -> dict:
    """A finished checkpoint's progress record, or a resume point's training state."""
    if path.endswith(".resume"):
        return load_training_state(path)[1]["state"]
    return load_checkpoint(path).progress


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="pretraining checkpoints (.safetensors) or resume points (.resume)")
    args = ap.parse_args()
    for path in args.paths:
        p = progress_of(path)
        loss = p.get("final_loss", (p.get("losses") or [None])[-1])
        print(f"{path}: epoch {p.get('epochs', p.get('epoch'))}, step {p.get('steps', p.get('step'))}, "
              f"last loss {loss if loss is None else round(loss, 3)}")
        for q in p.get("probes", []):
            asked = f", answered {100 * q['answered']:.1f}%" if "answered" in q else ""
            print(f"  epoch {q['epoch']:4d} ({q['seconds'] / 60:6.1f} min): known {100 * q['known']:.1f}%{asked}")


if __name__ == "__main__":
    main()
