"""Which device a run takes and what it computes in there, with the GPUs' availability mocked: this
machine need not have them. Apple's GPU (MPS) is resolved and refused here; no run of ours has been
measured on one."""

import pytest
import torch
from tests.conftest import one_clear_line, run

from factgpt import runtime
from factgpt.errors import FactgptError
from factgpt.runtime import machine, resolve_device, resolve_kernels, resolve_precision


def gpus(monkeypatch, *, cuda: bool, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: int(cuda))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize(("cuda", "mps", "expected"), [(True, True, "cuda"), (True, False, "cuda"),
                                                       (False, True, "mps"), (False, False, "cpu")])
def test_auto_prefers_cuda_then_apples_gpu_then_cpu(monkeypatch, cuda, mps, expected):
    gpus(monkeypatch, cuda=cuda, mps=mps)
    assert resolve_device("auto").type == expected


def test_mps_is_taken_where_torch_reports_it_and_refused_in_one_line_elsewhere(monkeypatch):
    gpus(monkeypatch, cuda=False, mps=True)
    assert resolve_device("mps") == torch.device("mps")
    gpus(monkeypatch, cuda=False, mps=False)
    with pytest.raises(FactgptError, match="no Apple GPU") as e:
        resolve_device("mps")
    assert "--device cpu" in str(e.value)
    with pytest.raises(FactgptError, match="not a device"):
        resolve_device("mps:0")


def test_apples_gpu_computes_in_fp32_through_torchs_fused_attention():
    mps = torch.device("mps")  # a device object needs no GPU; nothing is moved onto it
    assert resolve_precision("auto", mps) == "fp32"
    assert resolve_precision("bf16", mps) == "fp32"  # a record never names bf16 for a run that was not
    assert resolve_precision("fp32", mps) == "fp32"
    assert resolve_kernels("fused", mps) == ("fused", None)  # SDPA, which drops out in-kernel; no C++ build
    assert resolve_kernels("fused", mps, engine="reference") == ("torch", None)
    assert machine(mps).endswith("Apple GPU (MPS))")


def test_torchrun_on_apples_gpu_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(FactgptError, match="torchrun cannot train on Apple's GPU"):
        runtime.init_distributed(torch.device("mps"))


def test_command_line_refuses_mps_where_there_is_none(monkeypatch, capsys, tmp_path):
    gpus(monkeypatch, cuda=False, mps=False)
    corpus, train = tmp_path / "corpus.txt", tmp_path / "train.tsv"
    corpus.write_text("Ada Brook was born in Paris.\n", encoding="utf-8")
    train.write_text("Where was Ada Brook born?\tParis\n", encoding="utf-8")
    code, _, err = run(["finetune", "vanilla", corpus, "--finetune_corpus_path", train, "--writing_params_path",
                        tmp_path / "m.pt", "--device", "mps", "--no_tensorboard"], capsys)
    one_clear_line(code, err, "--device mps", "no Apple GPU")
    assert not (tmp_path / "m.pt").exists()
