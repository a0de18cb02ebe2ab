"""Training: the reference's optimisation, run on one of two engines.

Both engines take the examples in file order every epoch (the reference's DataLoader does not
shuffle), or with `shuffle` in the same seeded order per epoch, compute the same loss (mean
cross-entropy over the non-PAD targets of the batch), and use the same learning rate at every
step: AdamW with decay on every parameter whose name has no "bias", gradient-norm clipping, and
the reference's token-counted schedule, in which the counter grows by batch * sequence length per
step, padding included, and the new rate is set *after* the step (so the first step runs at the
full rate).

- engine="reference": a DataLoader over __getitem__, padded rows, explicit attention, for-each
  AdamW: the reference's computation, kept to measure against.
- engine="fast": batches drawn in one vectorised call, their useful part grouped by length (or
  packed several examples to a row), fused attention and fused AdamW.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

from factgpt.config import TrainConfig, json_roundtrip
from factgpt.data import PAD_ID, group_by_length, pack
from factgpt.errors import FactgptError
from factgpt.model import GPT, lm_loss
from factgpt.runtime import bf16_native, bf16_runs


def lr_multiplier(tokens: int, warmup_tokens: int, final_tokens: int) -> float:
    """The reference schedule: linear warm-up, then max(0.1, cosine). It rises again after
    final_tokens (the cosine keeps turning past pi; only the 0.1 floor holds)."""
    if tokens < warmup_tokens:
        return float(tokens) / float(max(1, warmup_tokens))
    progress = float(tokens - warmup_tokens) / float(max(1, final_tokens - warmup_tokens))
    return max(0.1, 0.5 * (1.0 + math.cos(math.pi * progress)))


def freeze(model: torch.nn.Module, pattern: str) -> list[str]:
    """Leave the parameters whose names match the regular expression `pattern` as they are (no
    gradient, so no update and no decay), train all others, and return the frozen names; ""
    freezes nothing. A pattern that is not a regular expression, or matches no parameter or every
    one, is an error: a typo must not silently train everything, or nothing."""
    try:
        rx = re.compile(pattern) if pattern else None
    except re.error as e:
        raise FactgptError(f"frozen parameters: {pattern!r} is not a regular expression ({e})") from None
    names = [n for n, _ in model.named_parameters() if rx and rx.search(n)]
    hint = "names look like tok_emb.weight, blocks.0.mlp.0.weight, head.weight"
    if pattern and not names:
        raise FactgptError(f"frozen parameters: {pattern!r} matches no parameter name", hint=hint)
    if len(names) == len(list(model.parameters())):
        raise FactgptError(f"frozen parameters: {pattern!r} matches every parameter, leaving nothing to train",
                           hint=hint)
    for n, p in model.named_parameters():  # every parameter, so a model trained before starts afresh
        p.requires_grad_(n not in names)
    return names


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay every trained parameter whose name has no "bias": weights, LayerNorm weights,
    embeddings, bare parameters such as pos_emb and the perceiver's basis C (the reference's rule).
    Frozen parameters (`freeze`) are left out."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if "bias" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


class TrainingData(Protocol):
    """What the Trainer reads from a dataset (CharCorruptionDataset, NameDataset, MixedDataset)."""

    @property
    def seq_len(self) -> int:
        """Ids per example, padding included (the learning-rate counter counts them all)."""
        ...

    def __len__(self) -> int: ...

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One padded (x, y) row: the reference engine's DataLoader reads these."""
        ...

    def draw_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows of `indices` in one vectorised call, the same draws as __getitem__ (fast engine)."""
        ...


@runtime_checkable
class RandomDraws(Protocol):
    """A dataset whose examples are drawn at random (span corruption): the Trainer gives its
    generator a stream of its own and keeps the generator's state in resume points."""
    generator: torch.Generator

    def reseed(self, seed: int) -> None: ...


@dataclass
class TrainState:
    """Where training stands; enough to report progress and to resume."""
    epoch: int = 0  # epochs finished
    batch_in_epoch: int = 0  # batches finished in the current epoch (where a resume starts)
    step: int = 0
    tokens: int = 0  # the reference's counter: batch * sequence length, padding included
    useful_tokens: int = 0  # non-PAD targets actually learnt
    examples: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)  # one per step
    # knowledge probe results: {"epoch", "step", "seconds" (training time so far), "known"}
    probes: list[dict] = field(default_factory=list)


def _compiled(net):
    """torch.compile where a compiler is present; the eager module otherwise."""
    try:
        return torch.compile(net, dynamic=True)
    except Exception:  # no compiler toolchain: train eagerly rather than fail
        return net


def resolve_precision(precision: str, device: torch.device, engine: str = "fast") -> str:
    """The precision a run computes in, which its records name: "auto" becomes bf16 where bf16 is
    native on the fast engine; "bf16" stays bf16 where bf16 autocast is supported at all, and is
    fp32 elsewhere (a CPU without AVX512), so a record never says bf16 of a run in fp32."""
    if precision == "auto":
        return "bf16" if engine == "fast" and bf16_native(device) else "fp32"
    if precision == "bf16" and not bf16_runs(device):
        return "fp32"
    return precision


EVENTS = ("on_step_end", "on_epoch_end", "on_checkpoint")


class Trainer:
    """Trains `model` on `dataset` with `config`. Callbacks (minGPT's manner) take the trainer:
    "on_step_end" after every optimiser step, "on_epoch_end" after every epoch, "on_checkpoint"
    every `checkpoint_every` steps (before that step's "on_step_end"). A callback may call
    stop(): training ends after the current step, which is then where it stands."""

    def __init__(self, model: GPT, dataset: TrainingData, config: TrainConfig, *,
                 device: torch.device | str = "cpu", writer=None, progress: bool = True,
                 checkpoint_every: int = 0) -> None:
        self.raw_model = model  # the nn.Module: parameters, state dicts, train()/eval()
        self.dataset = dataset
        self.config = config
        self.device = torch.device(device)
        self.checkpoint_every = checkpoint_every  # steps between "on_checkpoint" events (0: none)
        self.callbacks: defaultdict[str, list[Callable[[Trainer], None]]] = defaultdict(list)
        self.should_stop = False
        fast = config.engine == "fast"
        model.set_attention("sdpa" if fast else "explicit")
        model.to(self.device)
        self.frozen = freeze(model, config.frozen)  # before DDP and the optimiser see the parameters
        self._dropouts = [(m, m.p) for m in model.modules() if isinstance(m, torch.nn.Dropout)]  # own rates
        # Data parallel under torchrun: every process builds the same global batch (same draws) and
        # trains on its slice; gradients are averaged by DistributedDataParallel.
        self.world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.rank = dist.get_rank() if self.world > 1 else 0
        self.writer = writer if self.rank == 0 else None  # logs and progress from rank 0 only
        self.progress = progress and self.rank == 0
        if fast and config.layout == "packed" and model.perceiver:  # latent i reads input positions <= i
            raise FactgptError("the perceiver cannot train on packed rows: each of its rows must start an example",
                               hint="use the grouped layout")
        if self.world > 1 and not fast:
            raise FactgptError("multi-process training runs the fast engine only",
                               hint="leave out --engine reference, or run without torchrun")
        # What forward runs: `unoptimized_model` is the model, DDP-wrapped under torchrun; `net` is
        # that compiled (--compile) or the same object, and falls back to it if compiling fails.
        self.unoptimized_model: torch.nn.Module = model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel
            self.unoptimized_model = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.net = _compiled(self.unoptimized_model) if config.compile else self.unoptimized_model
        self.compile_fallback: str | None = None  # why torch.compile was given up, if it was
        self._compiled_ran = False  # the compiled model has given logits once (a resumed run too)
        kwargs = {"fused": True} if fast else {"foreach": True}
        if not fast and self.device.type != "cuda":
            kwargs = {"foreach": False}  # the reference's plain AdamW loop on CPU
        self.optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay),
                                           lr=config.learning_rate, betas=config.betas, **kwargs)
        self.state = TrainState()
        self.precision = resolve_precision(config.precision, self.device, config.engine)  # "fp32" or "bf16"
        self.seq_len = dataset.seq_len  # ids per example, padding included (the lr counter)
        if isinstance(dataset, RandomDraws):
            dataset.reseed(config.seed + 1)  # corruption draws: own stream, same for both engines

    # -- events -----------------------------------------------------------------------------------

    def add_callback(self, event: str, fn: Callable[[Trainer], None]) -> None:
        if event not in EVENTS:
            raise ValueError(f"no event {event!r}; events: {', '.join(EVENTS)}")
        self.callbacks[event].append(fn)

    def trigger(self, event: str) -> None:
        for fn in self.callbacks[event]:
            fn(self)

    def stop(self) -> None:
        """End training after the current step (train() returns the state there)."""
        self.should_stop = True

    def _autocast(self):
        if self.precision == "bf16":  # resolve_precision said the device supports it
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _to(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _batches(self, first_batch: int = 0):
        """(parts, n_examples, n_targets) per step, from `first_batch` on. `parts` is a list of
        model.forward kwargs (with "targets") that together make this process's share of the
        batch; n_examples and n_targets count the whole global batch."""
        if self.config.engine == "reference":
            return self._reference_batches(first_batch)
        return ((self._layout(x, y), n, t) for x, y, n, t in self._global_batches(first_batch))

    def _epoch_order(self) -> torch.Tensor:
        """This epoch's example order: file order, or (shuffle, and always with several processes)
        a permutation seeded by the seed and the epoch, the same in every process and on resuming."""
        n = len(self.dataset)
        if self.config.shuffle or self.world > 1:
            return torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed * 100_003
                                                                             + self.state.epoch))
        return torch.arange(n)

    def _reference_batches(self, first_batch: int):
        """The reference's DataLoader over __getitem__: padded rows in file order (or the fast
        engine's seeded order with `shuffle`)."""
        cfg, ds = self.config, self.dataset
        rest = Subset(ds, self._epoch_order()[first_batch * cfg.batch_size:].tolist())
        # A DataLoader draws a seed for its workers from the global generator as it starts (unless
        # given its own). The epoch that ran uninterrupted drew it at its start, and a resume point
        # taken inside the epoch holds that draw, so a resumed epoch's loader draws from a generator
        # of its own: its dropout masks then follow the uninterrupted run's.
        own = torch.Generator() if first_batch else None
        for x, y in DataLoader(rest, batch_size=cfg.batch_size, shuffle=False, num_workers=0, generator=own):
            yield [{"idx": x.to(self.device), "targets": y.to(self.device)}], x.shape[0], int((y != PAD_ID).sum())

    def _global_batches(self, first_batch: int):
        """(x, y, n_examples, n_targets): each global batch drawn in one vectorised call, in file
        order or a seeded order per epoch, then cut to this process's slice."""
        cfg, ds = self.config, self.dataset
        n = len(ds)
        order = self._epoch_order()
        for start in range(first_batch * cfg.batch_size, n, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            x, y = ds.draw_batch(idx)
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
        if self.config.layout == "packed":  # vanilla only (refused for the perceiver in __init__)
            b = pack(x, y, row_len=x.shape[1])
            return [{"idx": self._to(b.x), "targets": self._to(b.y), "positions": self._to(b.positions),
                     "documents": self._to(b.documents)}]
        return [{"idx": self._to(gx), "targets": self._to(gy)}
                for gx, gy in group_by_length(x, y, self.config.group_tokens)]

    def _loss(self, parts: list[dict], n_targets: int) -> torch.Tensor:
        """Mean cross-entropy over the global batch's non-PAD targets (the reference's loss); with
        several processes each contributes its sum, scaled so DDP's average is that mean."""
        total = 0.0
        with self._autocast():  # one context for every part: weights are cast to bf16 once a step
            for part in parts:
                targets = part.pop("targets")
                logits = self._forward(part)
                total = total + lm_loss(logits, targets, reduction="sum")
        return total * (self.world / max(n_targets, 1))

    def _forward(self, batch: dict) -> torch.Tensor:
        """Logits; a compiled model that fails on its first call (no compiler toolchain) is
        replaced by the eager one, and the reason kept in compile_fallback."""
        if self.net is self.unoptimized_model:
            return self.net(**batch)[0]
        try:
            logits = self.net(**batch)[0]
            self._compiled_ran = True
            return logits
        except Exception as e:  # torch.compile compiles lazily: failures surface here
            if self._compiled_ran:  # it compiled and ran: this failure is the model's own
                raise
            self.compile_fallback = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            self.net = self.unoptimized_model
            return self.net(**batch)[0]

    def train(self) -> TrainState:
        """Train from where the state stands to the last epoch, or until a callback calls stop()."""
        try:
            return self._train()
        finally:  # however training ends, the model leaves it with its own dropout rates
            self._set_dropout(True)

    def _train(self) -> TrainState:
        cfg, model, st = self.config, self.raw_model, self.state
        self.should_stop = False
        steps_per_epoch = math.ceil(len(self.dataset) / cfg.batch_size)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.max_epochs * steps_per_epoch, initial=st.step, unit="step", dynamic_ncols=True)
        lr = self.optimizer.param_groups[0]["lr"]
        t_start = time.perf_counter()

        def fire(event: str) -> None:
            nonlocal t_start
            st.seconds += time.perf_counter() - t_start  # up to date for the callbacks
            self.trigger(event)
            t_start = time.perf_counter()  # the callbacks' own time is not training time

        for epoch in range(st.epoch, cfg.max_epochs):
            self._set_dropout(epoch >= cfg.dropout_start_epoch)
            model.train()
            for parts, n_examples, n_targets in self._batches(st.batch_in_epoch):
                loss = self._loss(parts, n_targets)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_norm_clip)
                self.optimizer.step()
                st.step += 1
                st.batch_in_epoch += 1
                st.examples += n_examples
                st.tokens += n_examples * self.seq_len  # (y >= 0).sum() in the reference
                st.useful_tokens += n_targets
                if cfg.lr_decay:
                    lr = cfg.learning_rate * lr_multiplier(st.tokens, cfg.warmup_tokens, cfg.final_tokens)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                if self.world > 1:  # the global batch's loss, for logging
                    share = loss.detach() / self.world
                    dist.all_reduce(share)
                    loss_value = share.item()
                else:
                    loss_value = loss.item()
                st.losses.append(loss_value)
                if self.writer is not None and st.step % cfg.log_every == 0:
                    self.writer.add_scalar("train/loss", loss_value, st.step - 1)
                    self.writer.add_scalar("train/lr", lr, st.step - 1)
                if bar is not None:
                    elapsed = st.seconds + time.perf_counter() - t_start
                    bar.set_postfix_str(f"epoch {epoch + 1} loss {loss_value:.4f} lr {lr:.2e} "
                                        f"tok/s {st.tokens / max(elapsed, 1e-9):,.0f}", refresh=False)
                    bar.update(1)
                if self.checkpoint_every and st.step % self.checkpoint_every == 0:
                    fire("on_checkpoint")
                fire("on_step_end")
                if self.should_stop:
                    break
            else:  # the epoch ran to its end
                st.epoch = epoch + 1
                st.batch_in_epoch = 0
                fire("on_epoch_end")
            if self.should_stop:
                break
        st.seconds += time.perf_counter() - t_start
        if bar is not None:
            bar.close()
        return st

    def _set_dropout(self, on: bool) -> None:
        """Every dropout at the model's own rate, or (`dropout_start_epoch` not yet reached) at 0."""
        for m, p in self._dropouts:
            m.p = p if on else 0.0

    # -- resuming -------------------------------------------------------------------------------

    def snapshot(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything a resume needs: model, optimizer, RNG states (tensors) and progress (JSON)."""
        tensors = {f"model.{k}": v for k, v in self.raw_model.state_dict().items()}
        opt = self.optimizer.state_dict()
        for idx, per_param in opt["state"].items():
            for name, value in per_param.items():
                tensors[f"optim.{idx}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
        tensors["rng.torch"] = torch.get_rng_state()
        if isinstance(self.dataset, RandomDraws):
            tensors["rng.data"] = self.dataset.generator.get_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {"state": dict(self.state.__dict__), "param_groups": opt["param_groups"], **self.identity()}
        return tensors, meta

    def identity(self) -> dict:
        """The recipe and model a resume point must match, as they read back from its JSON."""
        config = {k: v for k, v in self.config.__dict__.items() if k != "extra"}
        return json_roundtrip({"config": config, "model": self.raw_model.config.identity()})

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Continue exactly where snapshot() was taken (same data draws, dropout and schedule)."""
        self.raw_model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.data" in tensors:
            self.dataset.generator.set_state(tensors["rng.data"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.state = TrainState(**meta["state"])
