"""Progress of a training stage, for people and for logs, and its TensorBoard folder.

On a terminal, a tqdm bar. Where stderr is a file or a pipe (a background run, CI, nohup), a bar's
carriage returns would make one line of megabytes, so the same figures come as one plain line every
few seconds, as nanoGPT logs:

    pretrain: epoch 3/650 step 61/14950 loss 2.3456 lr 6.00e-03 tokens/s 12,345 left 2h41m
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from factgpt.errors import FactgptError


def _duration(seconds: float) -> str:
    m = int(seconds // 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{int(seconds % 60):02d}s"


class Progress:
    """Steps of one stage. `update` after every step; `close` at the end."""

    def __init__(self, label: str, total: int, initial: int = 0, *, every: float = 10.0, stream=None) -> None:
        self.label, self.total, self.initial = label, total, initial
        self.every = every  # seconds between plain lines
        self.stream = stream if stream is not None else sys.stderr
        self.bar = None
        if self.stream.isatty():
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, unit="step", desc=label, dynamic_ncols=True,
                            file=self.stream)
        self.t0 = self.last = time.perf_counter()
        self.step = initial

    def update(self, *, step: int, epoch: int, max_epochs: int, loss: float, lr: float, tokens_per_s: float) -> None:
        now = time.perf_counter()
        figures = f"loss {loss:.4f} lr {lr:.2e} tokens/s {tokens_per_s:,.0f}"
        if self.bar is not None:
            self.bar.set_postfix_str(f"epoch {epoch}/{max_epochs} {figures}", refresh=False)
            self.bar.update(step - self.step)
        elif now - self.last >= self.every or step == self.total:
            done = step - self.initial  # steps this process ran, the pace of what is left
            left = (self.total - step) * (now - self.t0) / max(done, 1)
            print(f"{self.label}: epoch {epoch}/{max_epochs} step {step}/{self.total} {figures} "
                  f"left {_duration(left)}", file=self.stream, flush=True)
            self.last = now
        self.step = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def tensorboard(root: Path, name: str):
    """A TensorBoard SummaryWriter (a context: closed, so flushed, at the end) in a new folder under
    `root`: `name` and the start time, so that runs never append to one another's."""
    from torch.utils.tensorboard import SummaryWriter

    stamp = f"{name}_{time.strftime('%Y%m%d-%H%M%S')}"
    log_dir = root / stamp
    for n in range(2, 100):  # two runs started in the same second
        if not log_dir.exists():
            break
        log_dir = root / f"{stamp}-{n}"
    try:
        return SummaryWriter(log_dir=str(log_dir))
    except OSError as e:  # a read-only folder, or a file where --tb_dir names a folder
        raise FactgptError(f"cannot write TensorBoard logs: {e.strerror or e}", path=log_dir,
                           hint="give another --tb_dir, or --no_tensorboard") from None
