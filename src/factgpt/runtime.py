"""Where a run executes: the device, the torchrun process group, and a line naming the machine."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import sys

import torch

from factgpt.errors import FactgptError


def mps_available() -> bool:
    """Whether torch reports Apple's GPU (Metal Performance Shaders)."""
    return torch.backends.mps.is_available()


def resolve_device(name: str = "auto") -> torch.device:
    """auto (CUDA when there is one, else Apple's GPU, else CPU), cpu, cuda, cuda:N or mps; anything
    else, or a GPU this machine lacks, is a FactgptError rather than torch's traceback at the first
    tensor moved."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu")
    match = re.fullmatch(r"cpu|mps|cuda(?::(\d+))?", name)
    if match is None:
        raise FactgptError(f"--device {name}: not a device this tool runs on",
                           hint="use auto, cpu, cuda, cuda:N or mps")
    if name == "mps" and not mps_available():
        raise FactgptError("--device mps: torch reports no Apple GPU (MPS) on this machine", hint="use --device cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise FactgptError(f"--device {name}: no CUDA device is available", hint="use --device cpu")
        if match.group(1) is not None and int(match.group(1)) >= count:
            raise FactgptError(f"--device {name}: this machine has {count} CUDA device(s)",
                               hint=f"use cuda:0 to cuda:{count - 1}")
    return torch.device(name)


def init_distributed(device: torch.device) -> tuple[int, torch.device]:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA). Returns the world
    size and this process's device: cuda:LOCAL_RANK under torchrun on CUDA, else `device`."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and device.type == "mps":  # torch.distributed has no backend for Apple's GPU
        raise FactgptError("torchrun cannot train on Apple's GPU (MPS): torch.distributed has no backend for it",
                           hint="run one process with --device mps, or CPU processes with --device cpu")
    if world > 1 and device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise FactgptError(f"torchrun started local rank {local} but {torch.cuda.device_count()} CUDA "
                               "device(s) are visible", hint="give --nproc_per_node at most the GPU count, "
                               "or train on CPU processes with --device cpu")
        device = torch.device("cuda", local)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return world, device


def is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def synchronize(device: torch.device | str) -> None:
    """Wait for the GPU's queued work (CUDA or Apple's), so that a clock read after it times it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def bf16_native(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively (not emulated): Ampere+ GPUs, AVX512-BF16 or AMX CPUs."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def bf16_runs(device: torch.device) -> bool:
    """Whether bf16 autocast runs at all, natively or emulated: CUDA GPUs that support it, AVX512 CPUs
    (bf16_native says which of them run it at full speed)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return "AVX512" in torch.backends.cpu.get_cpu_capability()


def machine(device: torch.device | str = "cpu") -> str:
    """Host, processor and its vector unit (AVX2, AVX512...: the same recipe takes several times as
    long on 2 AVX2 cores as on 2 AVX512-BF16 ones, docs/speed.md), threads and torch, and the
    GPU where `device` is one."""
    device = torch.device(device)
    gpu = ""
    if device.type == "cuda":
        gpu = f", {torch.cuda.get_device_name(device)}"
    elif device.type == "mps":
        gpu = ", Apple GPU (MPS)"
    # the vector unit torch dispatches to, and whether bf16 matmuls are native (AVX512 need not have them)
    vector = f"{torch.backends.cpu.get_cpu_capability()}{' BF16' if bf16_native(torch.device('cpu')) else ''}"
    return (f"{platform.node() or 'unknown'} ({platform.machine()} {vector}, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}{gpu})")


def leave_distributed(code: int) -> None:
    """Under torchrun, end this process now with exit status `code`: after a barrier (on success),
    destroy the process group and exit without the interpreter's finalisation. Gloo's worker
    threads can still hold tensors then, and releasing them during finalisation aborts the process
    ("terminate called without an active exception") in 10-20% of 2-process runs on 2 cores
    (measured). Does nothing in a single process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if code == 0:
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def resolve_precision(precision: str, device: torch.device, engine: str = "fast") -> str:
    """The precision a run computes in, which its records name: "auto" becomes bf16 where bf16 is
    native on the fast engine (never on Apple's GPU, where no run of ours has measured bf16 yet);
    "bf16" stays bf16 where bf16 autocast is supported at all, and is fp32 elsewhere (a CPU without
    AVX512, Apple's GPU), so a record never says bf16 of a run in fp32."""
    if precision == "auto":
        return "bf16" if engine == "fast" and bf16_native(device) else "fp32"
    if precision == "bf16" and not bf16_runs(device):
        return "fp32"
    return precision


def resolve_kernels(kernels: str, device: torch.device, engine: str = "fast") -> tuple[str, str | None]:
    """(the kernels a run trains with, why not the fused ones if they were asked for and are not):
    the fused kernels serve the fast engine; on a CPU only once factgpt.kernels has built."""
    if engine != "fast" or kernels != "fused":
        return "torch", None
    if device.type == "cpu":
        from factgpt.kernels import unavailable

        why = unavailable()
        if why is not None:
            return "torch", f"they could not be built: {why}"
    return "fused", None


def autocast(device: torch.device, precision: str):
    """bf16 autocast for a resolved precision of "bf16", else nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _compiled(net: torch.nn.Module):
    """torch.compile where a compiler is present; the eager module otherwise."""
    try:
        return torch.compile(net, dynamic=True)
    except Exception:  # no compiler toolchain: train eagerly rather than fail
        return net


class Forward:
    """What a training step calls for logits: the model, wrapped in DistributedDataParallel under
    torchrun, and compiled with torch.compile when asked. Compilation is lazy, so a missing compiler
    toolchain surfaces at the first call: the eager model then takes over and `fallback` says why."""

    def __init__(self, model: torch.nn.Module, device: torch.device, *, world: int = 1, compile: bool = False) -> None:
        self.eager: torch.nn.Module = model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel
            self.eager = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        self.net = _compiled(self.eager) if compile else self.eager
        self.fallback: str | None = None  # why torch.compile was given up, if it was
        self._compiled_ran = False  # the compiled model has given logits once (a resumed run too)

    def __call__(self, batch: dict) -> torch.Tensor:
        if self.net is self.eager:
            return self.net(**batch)[0]
        try:
            logits = self.net(**batch)[0]
            self._compiled_ran = True
            return logits
        except Exception as e:  # torch.compile compiles lazily: failures surface here
            if self._compiled_ran:  # it compiled and ran: this failure is the model's own
                raise
            self.fallback = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            self.net = self.eager
            return self.net(**batch)[0]
