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

import math
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
import torch.distributed as dist

from factgpt.batches import Batches
from factgpt.config import TrainConfig, json_roundtrip
from factgpt.errors import FactgptError
from factgpt.model import GPT, lm_loss
from factgpt.progress import Progress
from factgpt.runtime import Forward, autocast, resolve_kernels, resolve_precision


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


EVENTS = ("on_step_end", "on_epoch_end", "on_checkpoint")


class Trainer:
    """Trains `model` on `dataset` with `config`. Callbacks (minGPT's manner) take the trainer:
    "on_step_end" after every optimiser step, "on_epoch_end" after every epoch, "on_checkpoint"
    every `checkpoint_every` steps (before that step's "on_step_end"). A callback may call
    stop(): training ends after the current step, which is then where it stands. Batches come from
    factgpt.batches; DistributedDataParallel, torch.compile and precision from factgpt.runtime."""

    def __init__(self, model: GPT, dataset: TrainingData, config: TrainConfig, *,
                 device: torch.device | str = "cpu", writer=None, progress: bool = True,
                 checkpoint_every: int = 0, label: str = "train") -> None:
        self.raw_model = model  # the nn.Module: parameters, state dicts, train()/eval()
        self.dataset = dataset
        self.config = config
        self.device = torch.device(device)
        self.checkpoint_every = checkpoint_every  # steps between "on_checkpoint" events (0: none)
        self.label = label  # names the stage in progress lines
        self.callbacks: defaultdict[str, list[Callable[[Trainer], None]]] = defaultdict(list)
        self.should_stop = False
        fast = config.engine == "fast"
        model.set_engine(config.engine)
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
        self.batches = Batches(dataset, config, self.device, self.world, self.rank)
        self.forward = Forward(model, self.device, world=self.world, compile=config.compile)
        kwargs = {"fused": True} if fast else {"foreach": True}
        if not fast and self.device.type != "cuda":
            kwargs = {"foreach": False}  # the reference's plain AdamW loop on CPU
        self.optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay),
                                           lr=config.learning_rate, betas=config.betas, **kwargs)
        self.state = TrainState()
        self.precision = resolve_precision(config.precision, self.device, config.engine)  # "fp32" or "bf16"
        # "fused" or "torch", and why not the fused kernels where they were asked for and cannot serve
        self.kernels, self.kernels_fallback = resolve_kernels(config.kernels, self.device, config.engine)
        unfit = model.set_kernels(self.kernels == "fused")
        if unfit is not None:
            self.kernels, self.kernels_fallback = "torch", unfit
        self.seq_len = dataset.seq_len  # ids per example, padding included (the lr counter)
        if isinstance(dataset, RandomDraws):
            dataset.reseed(config.seed + 1)  # corruption draws: own stream, same for both engines

    @property
    def compile_fallback(self) -> str | None:
        """Why torch.compile was given up for eager, if it was."""
        return self.forward.fallback

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

    # -- the loop ---------------------------------------------------------------------------------

    def _loss(self, parts: list[dict], n_targets: int) -> torch.Tensor:
        """Mean cross-entropy over the global batch's non-PAD targets (the reference's loss); with
        several processes each contributes its sum, scaled so DDP's average is that mean."""
        total = 0.0
        with autocast(self.device, self.precision):  # one context for every part: weights cast once a step
            for part in parts:
                targets = part.pop("targets")
                total = total + lm_loss(self.forward(part), targets, reduction="sum")
        return total * (self.world / max(n_targets, 1))

    def train(self) -> TrainState:
        """Train from where the state stands to the last epoch, or until a callback calls stop()."""
        try:
            return self._train()
        finally:  # however training ends, the model leaves it with its own dropout rates
            self._set_dropout(True)

    def _train(self) -> TrainState:
        cfg, model, st = self.config, self.raw_model, self.state
        self.should_stop = False
        steps = cfg.max_epochs * math.ceil(len(self.dataset) / cfg.batch_size)
        bar = Progress(self.label, steps, st.step) if self.progress else None
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
            for parts, n_examples, n_targets in self.batches.epoch(epoch, st.batch_in_epoch):
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
                if cfg.lr_decay:  # set after the step: the first step runs at the full rate
                    lr = cfg.learning_rate * lr_multiplier(st.tokens, cfg.warmup_tokens, cfg.final_tokens)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                loss_value = self._global_loss(loss)
                st.losses.append(loss_value)
                if self.writer is not None and st.step % cfg.log_every == 0:
                    self.writer.add_scalar("train/loss", loss_value, st.step - 1)
                    self.writer.add_scalar("train/lr", lr, st.step - 1)
                if bar is not None:
                    elapsed = st.seconds + time.perf_counter() - t_start
                    bar.update(step=st.step, epoch=epoch + 1, max_epochs=cfg.max_epochs, loss=loss_value, lr=lr,
                               tokens_per_s=st.tokens / max(elapsed, 1e-9))
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

    def _global_loss(self, loss: torch.Tensor) -> float:
        """The global batch's loss, for logging (each process holds its share under torchrun)."""
        if self.world == 1:
            return loss.item()
        share = loss.detach() / self.world
        dist.all_reduce(share)
        return share.item()

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
        if self.device.type == "mps":  # dropout masks on Apple's GPU draw from its own generator
            tensors["rng.mps"] = torch.mps.get_rng_state()
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
        if "rng.mps" in tensors and self.device.type == "mps":
            torch.mps.set_rng_state(tensors["rng.mps"])
        self.state = TrainState(**meta["state"])
