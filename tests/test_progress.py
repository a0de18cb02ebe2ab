"""Progress for people and for logs: where stderr is a file or a pipe, plain lines a log can hold."""

from __future__ import annotations

import io
import subprocess
import sys

from factgpt.progress import Progress

from conftest import MODEL


def test_a_run_into_a_pipe_logs_short_plain_lines(tiny_files, tmp_path):
    f = tiny_files
    r = subprocess.run([sys.executable, "-m", "factgpt", "pretrain", "vanilla", str(f["corpus"]), *MODEL,
                        "--no_tensorboard", "--max_epochs", "3", "--batch_size", "2",
                        "--writing_params_path", str(tmp_path / "p.safetensors")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    progress = [ln for ln in lines if ln.startswith("pretrain: epoch ")]
    assert progress and progress[-1].startswith("pretrain: epoch 3/3 step 15/15 loss ")  # the last step is logged
    assert "\r" not in r.stderr and max(len(ln) for ln in lines) <= 300


def test_plain_lines_come_every_few_seconds_with_the_time_left():
    stream = io.StringIO()  # not a terminal
    p = Progress("finetune", total=10, every=3600.0, stream=stream)
    for step in range(1, 11):
        p.update(step=step, epoch=1, max_epochs=1, loss=1.0, lr=1e-3, tokens_per_s=100.0)
    p.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("finetune: epoch 1/1 step 10/10 loss 1.0000 lr 1.00e-03")
    assert lines[0].endswith("left 0m00s")
    stream = io.StringIO()
    p = Progress("pretrain", total=4, initial=2, every=0.0, stream=stream)  # resumed at step 2
    p.update(step=3, epoch=1, max_epochs=2, loss=2.0, lr=1e-3, tokens_per_s=5.0)
    assert "step 3/4" in stream.getvalue() and "left " in stream.getvalue()
