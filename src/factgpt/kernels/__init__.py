"""The fused CPU kernels of the fast engine (fused.cpp beside this file), built on first use.

- `attention(q, k, v, documents, scale, p)`: attention over the live entries of (R, T, H, D) inputs
  only: block-diagonal per document where `documents` (R, T) is given (packed rows), causal; the
  dropout on its weights drawn inside, never stored.
- `dropout(x, p)`: the same distribution as nn.Dropout, its mask regenerated in the backward.

Each call draws a 64-bit seed from torch's default generator: runs repeat from their seed, resume
points (which hold that generator) stay exact, and the masks follow Philox4x32-10 as CUDA's fused
attention does. The build is cached per source, torch version and processor (it compiles for the
processor it runs on) under $FACTGPT_CACHE, else ~/.cache/factgpt. Where it cannot be built (no
compiler, no ninja), `unavailable()` says why in one line and the callers run torch's operations.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("fused.cpp")
HEAD_SIZES = (8, 16, 32, 64, 128)  # the head sizes fused.cpp is compiled for
# for the processor it runs on; OpenMP, so that at::parallel_for runs in torch's threads
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-std=c++20", "-fopenmp"]
_state: dict[str, str | None] = {}  # "error": None once built, else why not


def _processor() -> str:
    """The processor model and its flags (the build is for them)."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split("\n\n")[0]
    except OSError:
        info = ""
    keep = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags", "Features"))]
    return platform.machine() + "\n" + "\n".join(keep)


def build_folder() -> Path:
    """Where this source's build for this torch and this processor lives."""
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), torch.__version__.encode(), _processor().encode(),
                                     " ".join(FLAGS).encode()])).hexdigest()[:16]
    root = Path(os.environ.get("FACTGPT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                / "factgpt")
    return root / "kernels" / key


def unavailable() -> str | None:
    """None once the kernels are loaded (built at the first call, then cached); else why not, in a line."""
    if "error" not in _state:
        try:
            from torch.utils import cpp_extension

            folder = build_folder()
            folder.mkdir(parents=True, exist_ok=True)
            cpp_extension.load(name="factgpt_fused", sources=[str(SOURCE)], extra_cflags=FLAGS,
                               extra_ldflags=["-fopenmp"], build_directory=str(folder), is_python_module=False,
                               verbose=False)
            _state["error"] = None
        except Exception as e:  # no compiler, no ninja, a read-only cache: torch's operations instead
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            _state["error"] = f"{type(e).__name__}: {lines[-1][:200] if lines else ''}"
    return _state["error"]


def _seed() -> int:
    """A 64-bit key for one call's Philox stream, from torch's default generator."""
    return int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64))


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, documents, scale: float, p: float):
        seed = _seed() if p > 0 else 0
        o, lse = torch.ops.factgpt.attention_forward(q, k, v, documents, scale, p, seed)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.documents, ctx.scale, ctx.p, ctx.seed = documents, scale, p, seed
        return o

    @staticmethod
    def backward(ctx, grad_o):
        q, k, v, o, lse = ctx.saved_tensors
        gq, gk, gv = torch.ops.factgpt.attention_backward(grad_o, q, k, v, o, lse, ctx.documents, ctx.scale,
                                                          ctx.p, ctx.seed)
        return gq, gk, gv, None, None, None


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p: float):
        ctx.p, ctx.seed = p, _seed()
        return torch.ops.factgpt.dropout(x, p, ctx.seed)

    @staticmethod
    def backward(ctx, grad):
        return torch.ops.factgpt.dropout(grad.contiguous(), ctx.p, ctx.seed), None  # the same mask


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, documents: torch.Tensor | None, scale: float,
              p: float = 0.0) -> torch.Tensor:
    """softmax(scale q k^T, causal and within documents) v with dropout p on the weights: q (R, Tq, H, D),
    k and v (R, Tk, H, D), documents (R, T) or None; returns (R, Tq, H, D) in q's dtype."""
    _loaded()
    return _Attention.apply(q.contiguous(), k.contiguous(), v.contiguous(), documents, scale, p)


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """x with each element zeroed with probability p and the rest scaled by 1 / (1 - p)."""
    _loaded()
    return _Dropout.apply(x, p)


def _loaded() -> None:
    why = unavailable()
    if why is not None:
        raise RuntimeError(f"the fused kernels are unavailable: {why}")
