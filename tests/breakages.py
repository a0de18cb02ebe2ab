"""Breakages the suite must catch: each is a small deliberate bug put into a copy of the package,
and the tests named beside it must fail on that copy. Run it after changing a test that guards one
of them, or the code one of them breaks (about 3 minutes on 2 cores):

    python tests/breakages.py            # all of them
    python tests/breakages.py NAME ...   # some

It is not part of the suite (pytest collects test_*.py only); it prints one line a breakage, and
exits 1 if a breakage passed the tests meant to catch it, or no longer applies to the code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Breakage:
    name: str
    what: str  # the bug, in words
    file: str  # under src/factgpt/
    old: str  # the code as it is (must occur exactly once)
    new: str  # the code with the bug
    tests: tuple[str, ...]  # the tests that must fail


BREAKAGES = (
    Breakage("attention-dropout-skipped", "attention dropout skipped on the fast engine", "model.py",
             'if self.engine == "fast" and not dropping:', 'if self.engine == "fast":',
             ("tests/test_dropout.py::test_every_dropout_site_draws_its_mask_on_every_engine",)),
    Breakage("fused-attention-dropout-skipped", "the fused attention draws no dropout", "model.py",
             "p = self.attn_drop.p if self.training else 0.0", "p = 0.0",
             ("tests/test_dropout.py::test_every_dropout_site_draws_its_mask_on_every_engine",)),
    Breakage("fused-dropout-mask-lost", "the fused dropout's backward draws another mask", "kernels/__init__.py",
             "return torch.ops.factgpt.dropout(grad.contiguous(), ctx.p, ctx.seed), None",
             "return torch.ops.factgpt.dropout(grad.contiguous(), ctx.p, ctx.seed + 1), None",
             ("tests/test_kernels.py::test_the_dropout_kernel_draws_the_documented_mask_and_reuses_it_backward",)),
    Breakage("mlp-dropout-skipped", "the MLP's residual dropout left out of the model", "model.py",
             "        nn.Linear(4 * config.n_embd, config.n_embd),\n        Dropout(config.resid_pdrop),",
             "        nn.Linear(4 * config.n_embd, config.n_embd),\n        Dropout(0.0),",
             ("tests/test_dropout.py::test_every_dropout_site_draws_its_mask_on_every_engine",)),
    Breakage("no-slice", "torchrun: every process computes the whole global batch", "batches.py",
             "            if self.world > 1:  # this process's slice of the global batch",
             "            if False:  # this process's slice of the global batch",
             ("tests/test_distributed.py::test_each_process_trains_on_its_slice_and_the_slices_make_the_mean",)),
    Breakage("no-world-factor", "torchrun: a slice's loss not scaled by the world", "train.py",
             "return total * (self.world / max(n_targets, 1))", "return total * (1 / max(n_targets, 1))",
             ("tests/test_distributed.py::test_each_process_trains_on_its_slice_and_the_slices_make_the_mean",)),
    Breakage("no-stage-skip", "reproduce trains a finished stage again", "table.py",
             '            if ckpt.exists():\n                self.say(f"{key}: done earlier, skipped")\n'
             "                return False\n", "",
             ("tests/test_reproduce.py::test_a_row_interrupted_in_finetuning_skips_its_finished_pretraining",)),
    Breakage("lr-counter-non-pad", "the lr token counter counts only non-PAD targets", "train.py",
             "st.tokens += n_examples * self.seq_len", "st.tokens += n_targets",
             ("tests/test_train.py::test_each_step_runs_at_the_documented_rate",)),
    Breakage("lr-first-step-zero", "the first step runs at lr 0, not the full rate", "train.py",
             "lr=config.learning_rate, betas=config.betas", "lr=0.0, betas=config.betas",
             ("tests/test_train.py::test_each_step_runs_at_the_documented_rate",)),
    Breakage("no-autocast", "bf16 autocast turned off (the records still say bf16)", "runtime.py",
             'if precision == "bf16":\n        return torch.autocast', 'if False:\n        return torch.autocast',
             ("tests/test_train.py::test_bf16_runs_its_matmuls_in_bf16_and_learns",)),
    Breakage("no-scale", "attention without 1/sqrt(d)", "model.py",
             " * (1.0 / math.sqrt(k.size(-1)))  # (B, nh, Tq, Tk)", "  # (B, nh, Tq, Tk)",
             ("tests/test_conformance.py::test_logits_match_the_reference",)),
    Breakage("tanh-gelu", "the tanh approximation of GELU", "model.py", "nn.GELU(),", 'nn.GELU(approximate="tanh"),',
             ("tests/test_conformance.py::test_logits_match_the_reference",)),
    Breakage("padding-visible", "cached decoding lets a row see its left padding", "model.py",
             "mask = (causal[None] & key_valid[:, None, :])[:, None]", "mask = causal[None, None].expand(B, 1, -1, -1)",
             ("tests/test_model.py::test_batched_decoding_matches_one_at_a_time",)),
    Breakage("refuses-good-questions", "the question reader refuses a line with a space at either end", "data.py",
             "        if not ln.strip():\n            raise FactgptError(\"empty line\"",
             "        if not ln.strip() or ln.strip() != ln:\n            raise FactgptError(\"empty line\"",
             ("tests/test_fuzz.py::test_read_questions_any_text",)),
    Breakage("resume-replaced", "a run replaces an interrupted run's resume point without a word", "stages.py",
             '    raise FactgptError("an interrupted run left its resume point here"',
             '    return None\n    raise FactgptError("an interrupted run left its resume point here"',
             ("tests/test_resume.py::test_ctrl_c_keeps_the_work_and_says_how_to_continue",)),
    Breakage("newline-in-predictions", "predictions written with the model's line breaks", "stages.py",
             "p.translate(table) + ", "p + ",
             ("tests/test_cli.py::test_predictions_keep_one_line_per_question_whatever_the_model_writes",)),
)


def caught(b: Breakage) -> str:
    """'caught', 'MISSED' or 'STALE' (the code no longer holds the text the breakage changes)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        path = src / "factgpt" / b.file
        text = path.read_text(encoding="utf-8")
        if text.count(b.old) != 1:
            return "STALE"
        path.write_text(text.replace(b.old, b.new), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(src)}  # ahead of the editable install's path
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *b.tests],
                           cwd=ROOT, env=env, capture_output=True, text=True)
        return "caught" if r.returncode == 1 else "MISSED"


def main(names: list[str]) -> int:
    chosen = [b for b in BREAKAGES if not names or b.name in names]
    results = []
    for b in chosen:
        verdict = caught(b)
        results.append(verdict)
        print(f"{verdict:7} {b.name}: {b.what} ({', '.join(t.split('::')[-1] for t in b.tests)})", flush=True)
    return 0 if all(v == "caught" for v in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
