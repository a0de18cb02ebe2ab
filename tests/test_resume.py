"""Crash-safe training: resume points, a real kill -9, determinism, atomic writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from factgpt.checkpoint import load_checkpoint, load_training_state, resume_path_for
from factgpt.cli import main

from conftest import TINY, killed_after, one_clear_line, run, same_tensors

TRAIN = ["--max_epochs", "6", "--batch_size", "2"]


def _params(path):
    return load_checkpoint(path).state_dict


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_same_seed_same_result(tiny_files, tmp_path, capsys, path):
    outs = []
    for i in range(2):
        out = tmp_path / f"run{i}.safetensors"
        assert main(["pretrain", "vanilla", str(tiny_files["corpus"]), *TINY, *TRAIN, "--engine", path,
                     "--writing_params_path", str(out)]) == 0
        outs.append(out)
    assert same_tensors(_params(outs[0]), _params(outs[1]))
    assert load_checkpoint(outs[0]).progress["final_loss"] == load_checkpoint(outs[1]).progress["final_loss"]


@pytest.mark.parametrize("path", ["fast", "reference"])
@pytest.mark.parametrize(("every", "crash"), [(3, 9), (5, 10)], ids=["mid_epoch", "epoch_end"])
def test_resume_continues_exactly(tiny_files, tmp_path, capsys, monkeypatch, path, every, crash):
    """Stopping after a resume point and resuming gives the uninterrupted run's parameters, from
    inside an epoch (step 9 of 5-batch epochs) or from its last step (step 10)."""
    common = ["pretrain", "vanilla", str(tiny_files["corpus"]), *TINY, "--batch_size", "2", "--engine", path]
    full = tmp_path / "full.safetensors"
    assert main([*common, "--max_epochs", "6", "--writing_params_path", str(full)]) == 0
    part = tmp_path / "part.safetensors"
    # run 6 epochs but "crash" after the resume point of step 9 or 10 (5 batches an epoch)
    killed_after(crash, [*common, "--max_epochs", "6", "--checkpoint_every", every, "--writing_params_path", part],
                 monkeypatch)
    assert resume_path_for(part).exists() and not part.exists()
    assert main([*common, "--max_epochs", "6", "--checkpoint_every", str(every), "--resume",
                 "--writing_params_path", str(part)]) == 0
    assert f"resumed at step {crash}" in capsys.readouterr().err
    assert same_tensors(_params(full), _params(part))
    assert not resume_path_for(part).exists()  # finished runs leave no resume point


def test_kill_minus_9_then_resume(tiny_files, tmp_path):
    """A real process killed with SIGKILL mid-training resumes and finishes like an uninterrupted run."""
    out = tmp_path / "k.safetensors"
    args = [sys.executable, "-m", "factgpt", "pretrain", "vanilla", str(tiny_files["corpus"]), *TINY,
            "--batch_size", "2", "--max_epochs", "400", "--checkpoint_every", "5", "--writing_params_path", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    resume = resume_path_for(out)
    deadline = time.time() + 120
    while not resume.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # let it run on past the first resume point
    assert proc.poll() is None, proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert resume.exists() and not out.exists()
    r = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "resumed at step" in r.stderr
    step = int(r.stderr.split("resumed at step ")[1].split()[0])
    assert step >= 5
    full = tmp_path / "full.safetensors"
    r2 = subprocess.run([*args[:-1], str(full)], capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stderr
    assert same_tensors(_params(out), _params(full))


def test_ctrl_c_keeps_the_work_and_says_how_to_continue(tiny_files, tmp_path):
    """Ctrl-C: the step ends, a resume point of that step is written, the message names it and the
    command that continues; the same command without --resume refuses in one line and leaves the
    resume point as it was; with --resume it finishes as an uninterrupted run."""
    out = tmp_path / "c.safetensors"
    args = ["pretrain", "vanilla", str(tiny_files["corpus"]), *TINY, "--batch_size", "2", "--max_epochs", "400",
            "--checkpoint_every", "1000", "--writing_params_path", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "factgpt", *args, "--checkpoint_every", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    resume = resume_path_for(out)
    deadline = time.time() + 120
    while not resume.exists() and time.time() < deadline and proc.poll() is None:  # training has begun
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("factgpt: interrupted at step ") and f"its resume point is {resume}" in line, err
    assert line.endswith("--checkpoint_every 1 --resume") and "Traceback" not in err, err
    step = int(line.split("at step ")[1].split(";")[0])
    assert load_training_state(resume)[1]["state"]["step"] == step  # written at the step it names
    before = resume.read_bytes()
    r = subprocess.run([sys.executable, "-m", "factgpt", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "an interrupted run left its resume point here" in r.stderr and "--resume" in r.stderr
    assert "--restart" in r.stderr and resume.read_bytes() == before and not out.exists()
    r = subprocess.run([sys.executable, "-m", "factgpt", *args, "--max_epochs", "3", "--resume"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "another model or recipe" in r.stderr  # resumed only as it was started
    r = subprocess.run([sys.executable, "-m", "factgpt", *args, "--restart", "--max_epochs", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "resumed" not in r.stderr and not resume.exists(), r.stderr  # said: start over


def test_resume_with_other_flags_is_refused(tiny_files, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.safetensors"
    common = ["pretrain", "vanilla", str(tiny_files["corpus"]), *TINY, "--batch_size", "2",
              "--writing_params_path", str(out), "--checkpoint_every", "2"]
    killed_after(2, [*common, "--max_epochs", "3"], monkeypatch)  # stop at the first resume point
    err = capsys.readouterr().err  # a kill, not a Ctrl-C: the last periodic resume point is named
    assert f"its resume point is {resume_path_for(out)}; continue with: factgpt pretrain" in err, err
    assert err.strip().endswith("--max_epochs 3 --resume")
    assert resume_path_for(out).exists()
    assert main([*common, "--max_epochs", "4", "--resume"]) == 1
    assert "another model or recipe" in capsys.readouterr().err
    # how batches are laid out is not the recipe: a resume with other groups continues the run
    assert main([*common, "--max_epochs", "3", "--resume", "--group_tokens", "64"]) == 0
    assert "resumed at step 2" in capsys.readouterr().err


def test_unwritable_output_fails_before_training(tiny_files, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # root (CI here) writes anywhere: the folder refuses as a read-only one does
        from pathlib import Path
        real = Path.write_bytes

        def refuse(self, data):
            if self.parent == ro:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, data)
        monkeypatch.setattr(Path, "write_bytes", refuse)
    try:
        code = main(["pretrain", "vanilla", str(tiny_files["corpus"]), *TINY, "--writing_params_path",
                     str(ro / "x.safetensors")])
    finally:
        ro.chmod(0o700)
    err = capsys.readouterr().err
    assert code == 1 and "cannot write" in err and "epochs" not in err, err


def test_disk_full_keeps_the_previous_checkpoint(tiny_files, tmp_path, capsys, monkeypatch):
    import errno

    import factgpt.outputs as atomic
    out = tmp_path / "m.safetensors"
    args = ["pretrain", "vanilla", str(tiny_files["corpus"]), *TINY, "--max_epochs", "1", "--writing_params_path",
            str(out)]
    assert main(args) == 0
    before = out.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(atomic.os, "fsync", full)  # the write of the new checkpoint fails
    one_clear_line(*run([*args[:-4], "--max_epochs", "2", "--writing_params_path", out], capsys)[::2],
                   "No space left on device")
    assert out.read_bytes() == before  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_frozen_finetuning_resumes_exactly_and_old_resume_points_still_load(tiny_files, tmp_path, capsys,
                                                                          monkeypatch):
    """A finetuning with parameters frozen resumes to the uninterrupted run's parameters (the
    optimiser holds state for the trained ones only), and a resume point written before `frozen`
    existed (no such key) is taken as the default, not refused."""
    from factgpt.checkpoint import load_training_state, save_training_state

    f = tiny_files
    pre = tmp_path / "pre.safetensors"
    assert main(["pretrain", "vanilla", str(f["corpus"]), *TINY, "--max_epochs", "1", "--writing_params_path",
                 str(pre)]) == 0
    common = ["finetune", "vanilla", str(f["corpus"]), *TINY, "--batch_size", "2", "--max_epochs", "3",
              "--reading_params_path", str(pre), "--finetune_corpus_path", str(f["train"]),
              "--finetune_frozen", "mlp|emb"]
    full, part = tmp_path / "full.safetensors", tmp_path / "part.safetensors"
    assert main([*common, "--writing_params_path", str(full)]) == 0
    killed_after(4, [*common, "--checkpoint_every", "2", "--writing_params_path", part], monkeypatch)
    assert main([*common, "--checkpoint_every", "2", "--resume", "--writing_params_path", str(part)]) == 0
    assert same_tensors(_params(full), _params(part))
    assert same_tensors({k: v for k, v in _params(pre).items() if "mlp" in k},
                        {k: v for k, v in _params(part).items() if "mlp" in k})

    old = tmp_path / "old.safetensors"
    plain = ["pretrain", "vanilla", str(f["corpus"]), *TINY, "--batch_size", "2", "--max_epochs", "3",
             "--checkpoint_every", "2", "--writing_params_path", str(old)]
    killed_after(2, plain, monkeypatch)
    tensors, meta = load_training_state(resume_path_for(old))
    del meta["config"]["frozen"]  # as written before the setting existed
    meta = {k: v for k, v in meta.items() if k not in ("format", "version")}  # save_training_state adds them
    save_training_state(resume_path_for(old), tensors, meta)
    capsys.readouterr()
    assert main([*plain, "--resume"]) == 0
    assert "resumed at step 2" in capsys.readouterr().err  # not a silent fresh start


def test_late_dropout_resumes_exactly(tiny_files, tmp_path, capsys, monkeypatch):
    """A resume point inside the epochs without dropout continues into the ones with it as the
    uninterrupted run does."""
    common = ["pretrain", "vanilla", str(tiny_files["corpus"]), *TINY, "--batch_size", "2", "--max_epochs", "4",
              "--dropout_start_epoch", "2"]
    full = tmp_path / "full.safetensors"
    assert main([*common, "--writing_params_path", str(full)]) == 0
    part = tmp_path / "part.safetensors"
    killed_after(6, [*common, "--checkpoint_every", "3", "--writing_params_path", part], monkeypatch)  # epoch 2 of 4
    assert main([*common, "--checkpoint_every", "3", "--resume", "--writing_params_path", str(part)]) == 0
    assert "resumed at step 6" in capsys.readouterr().err
    assert same_tensors(_params(full), _params(part))
