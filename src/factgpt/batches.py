"""Batches: what each engine feeds the model at every step.

- engine "reference": the reference's DataLoader over __getitem__, padded rows.
- engine "fast": each global batch drawn in one vectorised call, then laid out as rows grouped by
  length (`group_by_length`) or packed several examples to a row (`pack`), and cut to this
  process's slice under torchrun.

An epoch's order is file order (the reference's), or with `shuffle` (and always with several
processes) a permutation seeded by the seed and the epoch, the same in every process and on resuming.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Subset

from factgpt.config import TrainConfig
from factgpt.data import PAD_ID


@dataclass
class PackedBatch:
    x: torch.Tensor  # (R, T) input ids, several examples per row
    y: torch.Tensor  # (R, T) targets, PAD where nothing is learnt
    positions: torch.Tensor  # (R, T) position of each id within its own example
    documents: torch.Tensor  # (R, T) example number; attention stays inside one example
    n_examples: int  # examples in the batch (for tokens/s and the lr token counter)


def useful_lengths(y: torch.Tensor) -> torch.Tensor:
    """Positions each row needs: up to and including its last non-PAD target (at least 1).

    With causal attention and a loss that ignores PAD, positions after that change nothing.
    """
    T = y.shape[1]
    idx = torch.arange(1, T + 1)
    return torch.clamp((idx * (y != PAD_ID)).amax(dim=1), min=1)


def group_by_length(x: torch.Tensor, y: torch.Tensor, max_tokens: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split a batch into groups of examples of similar useful length, longest first; each group
    holds about `max_tokens` ids once trimmed to its longest example (at least one example).

    Trimming keeps every example at position 0 of its row and drops only positions after its last
    target, which (attention being causal and the loss ignoring PAD) change nothing. Attention
    then costs the sum over groups of rows x length**2 instead of every row's full block.
    """
    lengths = useful_lengths(y)
    order = torch.argsort(lengths, descending=True, stable=True)
    sorted_lengths = lengths[order].tolist()
    groups, start = [], 0
    while start < len(sorted_lengths):
        T = sorted_lengths[start]  # the group's longest example
        idx = order[start:start + max(1, max_tokens // T)]
        groups.append((x[idx, :T], y[idx, :T]))
        start += len(idx)
    return groups


def pack(x: torch.Tensor, y: torch.Tensor, row_len: int) -> PackedBatch:
    """Pack the useful part of each example into as few rows of row_len as first-fit allows.

    Examples are placed longest first into the first row with room (first-fit decreasing);
    positions restart at 0 for each example, and `documents` lets attention stay inside it.
    """
    B = x.shape[0]
    lengths = useful_lengths(y)
    order = torch.argsort(lengths, descending=True, stable=True).tolist()
    lens = lengths.tolist()
    free: list[int] = []  # room left in each row
    row_of = [0] * B
    off_of = [0] * B
    for i in order:  # B <= a few hundred: a short loop over ints, no tensors
        L = lens[i]
        r = next((r for r, room in enumerate(free) if room >= L), None)
        if r is None:  # no row has room: open a new one
            r = len(free)
            free.append(row_len)
        row_of[i], off_of[i] = r, row_len - free[r]
        free[r] -= L
    R = len(free)
    j = torch.arange(x.shape[1])[None, :]
    keep = j < lengths[:, None]  # (B, T) the positions that travel
    rows = torch.tensor(row_of, dtype=torch.long)  # dtype given: an empty list would be float
    offs = torch.tensor(off_of, dtype=torch.long)
    dest = (rows[:, None] * row_len + offs[:, None] + j)[keep]
    px = torch.full((R * row_len,), PAD_ID, dtype=torch.long)
    py = torch.full((R * row_len,), PAD_ID, dtype=torch.long)
    pos = torch.zeros(R * row_len, dtype=torch.long)
    doc = torch.full((R * row_len,), -1, dtype=torch.long)  # -1: filler at the end of a row
    px[dest] = x[keep]
    py[dest] = y[keep]
    pos[dest] = j.expand(B, -1)[keep]
    doc[dest] = torch.arange(B)[:, None].expand(-1, x.shape[1])[keep]
    return PackedBatch(px.view(R, row_len), py.view(R, row_len), pos.view(R, row_len),
                       doc.view(R, row_len), B)


# (parts, n_examples, n_targets): `parts` are model.forward kwargs (with "targets") that together make
# this process's share of the step's batch; the counts are the whole global batch's
Step = tuple[list[dict], int, int]


class Batches:
    """Every step's batch of one epoch, for `config.engine`, in this process (`rank` of `world`)."""

    def __init__(self, dataset, config: TrainConfig, device: torch.device, world: int = 1, rank: int = 0) -> None:
        self.dataset, self.config, self.device = dataset, config, device
        self.world, self.rank = world, rank

    def epoch(self, epoch: int, first_batch: int = 0) -> Iterator[Step]:
        """The steps of `epoch` from its batch `first_batch` on (a resumed epoch starts inside)."""
        order = self.order(epoch)
        if self.config.engine == "reference":
            return self._reference(order, first_batch)
        return ((self._layout(x, y), n, t) for x, y, n, t in self._global(order, first_batch))

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's example order: file order, or (shuffle, and always with several processes) a
        permutation seeded by the seed and the epoch."""
        n = len(self.dataset)
        if self.config.shuffle or self.world > 1:
            return torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed * 100_003 + epoch))
        return torch.arange(n)

    def _reference(self, order: torch.Tensor, first_batch: int) -> Iterator[Step]:
        """The reference's DataLoader over __getitem__: padded rows."""
        bs = self.config.batch_size
        rest = Subset(self.dataset, order[first_batch * bs:].tolist())
        # A DataLoader draws a seed for its workers from the global generator as it starts (unless
        # given its own). The epoch that ran uninterrupted drew it at its start, and a resume point
        # taken inside the epoch holds that draw, so a resumed epoch's loader draws from a generator
        # of its own: its dropout masks then follow the uninterrupted run's.
        own = torch.Generator() if first_batch else None
        for x, y in DataLoader(rest, batch_size=bs, shuffle=False, num_workers=0, generator=own):
            yield [{"idx": x.to(self.device), "targets": y.to(self.device)}], x.shape[0], int((y != PAD_ID).sum())

    def _global(self, order: torch.Tensor, first_batch: int):
        """(x, y, n_examples, n_targets): each global batch drawn in one vectorised call, then cut to
        this process's slice."""
        bs = self.config.batch_size
        for start in range(first_batch * bs, len(order), bs):
            idx = order[start:start + bs]
            x, y = self.dataset.draw_batch(idx)
            n_global, targets_global = len(idx), int((y != PAD_ID).sum())
            if self.world > 1:  # this process's slice of the global batch
                x = torch.tensor_split(x, self.world)[self.rank]
                y = torch.tensor_split(y, self.world)[self.rank]
                if x.shape[0] == 0:
                    # A global batch smaller than the world leaves this slice empty. DDP still
                    # needs a forward/backward here for its allreduce: one PAD id with a PAD
                    # target, whose loss (PAD ignored, summed) is exactly 0 and whose gradient
                    # reaches every parameter as zeros, so the global mean is unchanged.
                    x = y = torch.full((1, 1), PAD_ID, dtype=torch.long)
            yield x, y, n_global, targets_global

    def _layout(self, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
        """The fast engine's rows. "grouped": examples sorted by length, cut into groups of about
        `group_tokens` ids, each group trimmed to its longest example, so attention costs the
        sum of squared lengths. "packed": several examples per row of block_size with a
        block-diagonal mask (vanilla only; the default of vanilla pretraining, Recipe.pretrain_config).
        Every grouped row starts an example at position 0, which the perceiver needs (latent i reads
        input positions <= i)."""
        if self.config.layout == "packed":
            b = pack(x, y, row_len=x.shape[1])
            return [{"idx": self._to(b.x), "targets": self._to(b.y), "positions": self._to(b.positions),
                     "documents": self._to(b.documents)}]
        return [{"idx": self._to(gx), "targets": self._to(gy)}
                for gx, gy in group_by_length(x, y, self.config.group_tokens)]

    def _to(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)
