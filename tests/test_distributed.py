"""torchrun with two CPU processes (gloo) trains like one process on the same global batches."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from factgpt.checkpoint import load_checkpoint
from factgpt.stages import load_corpus

from conftest import TINY


def _two_and_one(common: list[str], tmp_path, one_more: tuple[str, ...] = ()):
    """Train with 2 gloo processes, then with 1, on the same flags (the one process with `one_more`
    too): (two, one, rank-0 stdout)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two, one = tmp_path / "two.safetensors", tmp_path / "one.safetensors"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "factgpt", *common, "--writing_params_path", str(two)],
                       capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert two.exists()
    r1 = subprocess.run([sys.executable, "-m", "factgpt", *common, *one_more, "--writing_params_path", str(one)],
                        capture_output=True, text=True, env=env, timeout=300)
    assert r1.returncode == 0, r1.stderr[-2000:]
    return load_checkpoint(two), load_checkpoint(one), r.stdout


def _assert_same_training(a, b) -> None:
    """The same steps up to float rounding: each process packs its slice into rows of its own, so the
    sums run in another order than one process's (measured: up to 2.6e-5 after these few steps)."""
    assert a.progress["tokens"] == b.progress["tokens"]
    for k in a.state_dict:
        diff = (a.state_dict[k] - b.state_dict[k]).abs().max().item()
        assert diff < 5e-5, (k, diff)
    assert abs(a.progress["final_loss"] - b.progress["final_loss"]) < 1e-4


def test_two_processes_match_one(tiny_files, tmp_path):
    """Two processes always shuffle (a seeded order per epoch), so without --shuffle they train as one
    process does with it."""
    common = ["pretrain", "vanilla", str(tiny_files["corpus"]), *TINY, "--device", "cpu", "--dropout", "0",
              "--max_epochs", "3", "--batch_size", "4", "--seed", "3", "--checkpoint_every", "0",
              "--precision", "fp32"]
    a, b, stdout = _two_and_one(common, tmp_path, one_more=("--shuffle",))
    assert stdout.count("pretrain: 3 epochs") == 1  # rank 0 alone reports
    _assert_same_training(a, b)


@pytest.mark.parametrize("layout", ["packed", "grouped"])
def test_each_process_trains_on_its_slice_and_the_slices_make_the_mean(layout):
    """Under torchrun every process draws the same global batch and keeps its slice; each slice's
    loss is scaled so that DDP's average over the processes is the global batch's mean loss."""
    from factgpt.batches import Batches
    from factgpt.config import GPTConfig, TrainConfig
    from factgpt.data import CharCorruptionDataset
    from factgpt.model import GPT
    from factgpt.train import Trainer

    from conftest import tiny_corpus

    def batches(world: int, rank: int) -> Batches:
        ds = CharCorruptionDataset(tiny_corpus(), 64, seed=0)
        ds.reseed(1)  # every process draws the same examples
        return Batches(ds, cfg, torch.device("cpu"), world=world, rank=rank)

    cfg = TrainConfig(max_epochs=1, batch_size=4, learning_rate=1e-3, shuffle=True, layout=layout,
                      group_tokens=64, precision="fp32")
    whole = list(batches(1, 0)._global(batches(1, 0).order(0), 0))
    for (x, y, n, t), *slices in zip(whole, *(batches(2, r)._global(batches(2, r).order(0), 0) for r in range(2))):
        assert all((n_r, t_r) == (n, t) for _, _, n_r, t_r in slices)  # every process counts the global batch
        assert torch.equal(torch.cat([x_r for x_r, _, _, _ in slices]), x)  # the slices share it out
        assert torch.equal(torch.cat([y_r for _, y_r, _, _ in slices]), y)
        assert all(len(x_r) < len(x) for x_r, _, _, _ in slices)  # none computes all of it
    model = GPT(GPTConfig(vocab_size=CharCorruptionDataset(tiny_corpus(), 64).vocab_size, block_size=64,
                          n_layer=1, n_head=2, n_embd=16, embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0))
    trainer = Trainer(model, CharCorruptionDataset(tiny_corpus(), 64), cfg, progress=False)
    for (parts, _, t), *slices in zip(batches(1, 0).epoch(0), *(batches(2, r).epoch(0) for r in range(2))):
        with torch.no_grad():
            trainer.world = 1
            whole = trainer._loss([dict(p) for p in parts], t)
            trainer.world = 2
            shares = [trainer._loss([dict(q) for q in p], t) for p, _, _ in slices]
        assert sum(shares) / 2 == pytest.approx(whole.item(), rel=1e-5)  # DDP averages the two


@pytest.mark.parametrize("variant", ["vanilla", "perceiver"])
def test_last_global_batch_smaller_than_the_world(tiny_files, tmp_path, variant):
    # 5 examples, batch 4: the last global batch holds 1 example, so rank 1's slice is empty; it
    # must still run forward/backward (DDP's allreduce) and contribute a zero gradient.
    corpus = tmp_path / "five.txt"
    corpus.write_text("\n".join(tiny_files["corpus"].read_text(encoding="utf-8").splitlines()[:5]),
                      encoding="utf-8")  # no final newline: 5 documents, not 5 and an empty one
    assert len(load_corpus(corpus)) == 5
    extra = ["--bottleneck_dim", "8"] if variant == "perceiver" else []
    common = ["pretrain", variant, str(corpus), *TINY, *extra, "--device", "cpu", "--dropout", "0", "--shuffle",
              "--precision", "fp32",
              "--max_epochs", "2", "--batch_size", "4", "--seed", "5", "--checkpoint_every", "0"]
    a, b, _ = _two_and_one(common, tmp_path)
    assert a.progress["steps"] == b.progress["steps"] == 4  # 2 epochs of batches 4 + 1
    _assert_same_training(a, b)


def test_frozen_finetuning_on_two_processes(tiny_files, tmp_path):
    # Frozen parameters are taken out of autograd before DDP wraps the model: DDP must then sync only
    # the trained ones, and the frozen ones must come out exactly as pretrained, as with one process
    # (--shuffle: several processes always draw a seeded order, one keeps file order without it).
    pretrained = tmp_path / "pre.safetensors"
    r = subprocess.run([sys.executable, "-m", "factgpt", "pretrain", "vanilla", str(tiny_files["corpus"]), *TINY,
                        "--device", "cpu", "--max_epochs", "1", "--batch_size", "4", "--checkpoint_every", "0",
                        "--writing_params_path", str(pretrained)],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    common = ["finetune", "vanilla", str(tiny_files["corpus"]), *TINY, "--device", "cpu", "--dropout", "0",
              "--reading_params_path", str(pretrained), "--finetune_corpus_path", str(tiny_files["train"]),
              "--finetune_frozen", "mlp|emb", "--shuffle", "--max_epochs", "3", "--batch_size", "4", "--seed", "2",
              "--checkpoint_every", "0", "--precision", "fp32"]
    a, b, _ = _two_and_one(common, tmp_path)
    _assert_same_training(a, b)
    before = load_checkpoint(pretrained).state_dict
    frozen = [k for k in before if "mlp" in k or "emb" in k]
    trained = [k for k in before if k not in frozen]
    assert frozen and trained
    assert all(torch.equal(a.state_dict[k], before[k]) for k in frozen)
    assert not all(torch.equal(a.state_dict[k], before[k]) for k in trained)


def test_more_local_ranks_than_gpus_is_one_clear_error(monkeypatch):
    from factgpt.errors import FactgptError
    from factgpt.runtime import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(FactgptError, match="local rank 1 but 1 CUDA device"):
        init_distributed(torch.device("cuda"))


def test_the_reference_engine_under_torchrun_is_one_clear_error(monkeypatch):
    import torch.distributed as dist

    from factgpt.config import GPTConfig, TrainConfig
    from factgpt.data import CharCorruptionDataset
    from factgpt.errors import FactgptError
    from factgpt.model import GPT
    from factgpt.train import Trainer

    from conftest import tiny_corpus

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    corpus = CharCorruptionDataset(tiny_corpus(), 64)
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(FactgptError, match="fast engine only"):
        Trainer(model, corpus, TrainConfig(max_epochs=1, batch_size=4, learning_rate=1e-3, engine="reference"),
                progress=False)
