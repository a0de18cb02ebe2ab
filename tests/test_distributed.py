"""torchrun with two CPU processes (gloo) trains like one process on the same global batches."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from factgpt.checkpoint import load_checkpoint

from conftest import TINY


def test_two_processes_match_one(tiny_files, tmp_path):
    common = ["pretrain", "vanilla", str(tiny_files["corpus"]), *TINY, "--dropout", "0", "--shuffle",
              "--max_epochs", "3", "--batch_size", "4", "--seed", "3", "--checkpoint_every", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two, one = tmp_path / "two.safetensors", tmp_path / "one.safetensors"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "factgpt", *common, "--writing_params_path", str(two)],
                       capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("pretrain: 3 epochs") == 1  # rank 0 alone reports
    r = subprocess.run([sys.executable, "-m", "factgpt", *common, "--writing_params_path", str(one)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_checkpoint(two), load_checkpoint(one)
    assert a.progress["tokens"] == b.progress["tokens"]
    for k in a.state_dict:
        assert torch.allclose(a.state_dict[k], b.state_dict[k], atol=2e-5), k
    assert abs(a.progress["final_loss"] - b.progress["final_loss"]) < 1e-4
