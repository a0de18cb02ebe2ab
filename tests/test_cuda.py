"""The CUDA path: what the CPU tests check, on a GPU. Skipped where no GPU is present (CI);
benchmarks/gpu_check.sh runs it on the GPU machine."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from factgpt.checkpoint import load_checkpoint, resume_path_for
from factgpt.cli import main
from factgpt.config import GPTConfig, TrainConfig
from factgpt.data import CharCorruptionDataset, NameDataset, read_questions, read_text
from factgpt.evaluate import predict, score
from factgpt.model import GPT
from factgpt.runtime import resolve_precision
from factgpt.train import Trainer

from conftest import CONFORMANCE, DATA, LONG, TINY, killed_after, need, tiny_corpus, tiny_tsv

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA = torch.device("cuda")
REF = CONFORMANCE / "vanilla_ref.params"


@pytest.fixture(scope="module")
def reference() -> GPT:
    return load_checkpoint(REF).build_model().eval().to(CUDA)


@need(REF)
@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_reference_logits_on_cuda(reference, impl):
    reference.set_engine(impl)
    ids = torch.from_numpy(np.load(CONFORMANCE / "input_ids.npy")).to(CUDA)
    want = torch.from_numpy(np.load(CONFORMANCE / "logits.npy"))
    with torch.no_grad():
        got, _ = reference(ids)
    err = (got.cpu() - want).abs().max().item()
    assert err < 1e-4, f"max |logit difference| {err:.2e}"


@need(REF)
def test_reference_greedy_answers_on_cuda(reference):
    """The 500 dev answers of the reference checkpoint, batched with the KV cache on the GPU."""
    reference.set_engine("fast")
    questions = read_questions(DATA / "birth_dev.tsv")
    vocab = CharCorruptionDataset(read_text(DATA / "wiki.txt"), 128).vocab
    preds = predict(reference, questions, vocab, engine="fast")
    want = (CONFORMANCE / "vanilla_ref.dev.predictions").read_text(encoding="utf-8").split("\n")[:-1]
    differ = [i for i, (a, b) in enumerate(zip(preds, want)) if a != b]
    assert not differ, f"{len(differ)} of 500 answers differ, first at line {differ[0] + 1}"
    assert score(questions, preds).correct == 5


def test_precision_auto_takes_bf16_where_the_gpu_runs_it_natively():
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    assert resolve_precision("auto", CUDA) == ("bf16" if native else "fp32")
    assert resolve_precision("auto", CUDA, engine="reference") == "fp32"


def _tiny(perceiver: bool, dropout: float = 0.0) -> tuple[GPT, CharCorruptionDataset]:
    corpus = CharCorruptionDataset(LONG + "\n" + tiny_corpus(), 64)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=16,
                          embd_pdrop=dropout, resid_pdrop=dropout, attn_pdrop=dropout, perceiver=perceiver,
                          bottleneck_dim=8 if perceiver else None))
    return model, corpus


@pytest.mark.parametrize("variant,layout", [("vanilla", "grouped"), ("vanilla", "packed"),
                                            ("perceiver", "grouped")])
@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_training_on_cuda_takes_the_cpu_steps(variant, layout, engine):
    """fp32, no dropout: the same examples and the same updates on both devices."""
    base, corpus = _tiny(variant == "perceiver")
    results = {}
    for device in ("cpu", "cuda"):
        model = copy.deepcopy(base)
        tc = TrainConfig(max_epochs=2, batch_size=4, learning_rate=1e-3, final_tokens=10_000, engine=engine,
                         precision="fp32", layout=layout, group_tokens=64)
        st = Trainer(model, corpus, tc, device=device, progress=False).train()
        results[device] = (st, model.cpu())
    (st_c, m_c), (st_g, m_g) = results["cpu"], results["cuda"]
    assert st_c.useful_tokens == st_g.useful_tokens
    assert st_g.losses == pytest.approx(st_c.losses, rel=1e-4, abs=1e-5)
    for (n, a), (_, b) in zip(m_c.named_parameters(), m_g.named_parameters()):
        assert torch.allclose(a, b, atol=1e-5), f"{n}: {(a - b).abs().max().item():.2e}"


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_finetuning_on_cuda_learns(precision):
    corpus = CharCorruptionDataset(tiny_corpus(), 64)
    names = NameDataset(corpus, tiny_tsv())
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32))
    tc = TrainConfig(max_epochs=30, batch_size=8, learning_rate=3e-3, final_tokens=10**9, precision=precision)
    trainer = Trainer(model, names, tc, device=CUDA, progress=False)
    assert trainer.precision == precision
    st = trainer.train()
    assert st.losses[-1] < 0.5 * st.losses[0]
    assert next(model.parameters()).device.type == "cuda"


def test_dropout_masks_on_cuda_keep_their_rate():
    from factgpt.model import keep_mask

    torch.manual_seed(0)
    m = keep_mask((64, 8, 128, 128), 0.9, device=CUDA)
    assert m.device.type == "cuda" and m.dtype == torch.bool
    rate = m.float().mean().item()
    n = m.numel()
    assert abs(rate - 0.9) < 5 * (0.9 * 0.1 / n) ** 0.5


@pytest.mark.parametrize("variant", ["vanilla", "perceiver"])
def test_resume_on_cuda_continues_the_run(tiny_files, tmp_path, capsys, monkeypatch, variant):
    """Dropout on, so the CUDA generator's state must travel in the resume point. CUDA's
    embedding backward sums with atomics, so runs agree closely rather than bit for bit."""
    extra = ["--bottleneck_dim", "8"] if variant == "perceiver" else []
    common = ["pretrain", variant, str(tiny_files["corpus"]), *TINY, *extra, "--device", "cuda",
              "--batch_size", "2", "--max_epochs", "6", "--precision", "fp32"]
    full = tmp_path / "full.safetensors"
    assert main([*common, "--writing_params_path", str(full)]) == 0
    part = tmp_path / "part.safetensors"
    killed_after(9, [*common, "--checkpoint_every", "3", "--writing_params_path", part], monkeypatch)
    assert resume_path_for(part).exists()
    assert main([*common, "--checkpoint_every", "3", "--resume", "--writing_params_path", str(part)]) == 0
    assert "resumed at step 9" in capsys.readouterr().err
    a, b = load_checkpoint(full), load_checkpoint(part)
    for k in a.state_dict:
        diff = (a.state_dict[k] - b.state_dict[k]).abs().max().item()
        assert diff < 1e-4, f"{k}: {diff:.2e}"
    # a run with another seed is far away: the tolerance above can tell a lost dropout stream
    other = tmp_path / "other.safetensors"
    assert main([*common, "--seed", "1", "--writing_params_path", str(other)]) == 0
    c = load_checkpoint(other)
    assert max((a.state_dict[k] - c.state_dict[k]).abs().max().item() for k in a.state_dict) > 1e-2


def test_reproduce_smoke_on_cuda(tmp_path):
    """Every row of the table, end to end on the GPU, at the smoke budget."""
    if not (DATA / "wiki.txt").exists():
        pytest.skip(f"{DATA} not present")
    out = tmp_path / "table"
    assert main(["reproduce", "--data-dir", str(DATA), "--budget", "smoke", "--out", str(out), "--device", "cuda",
                 "--quiet"]) == 0
    assert (out / "report.md").exists()
    records = json.loads((out / "stages.json").read_text())
    assert all(torch.cuda.get_device_name() in r["machine"] for r in records.values())
