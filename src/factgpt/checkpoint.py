"""Checkpoints: factgpt's own format and the reference's `.params` files.

factgpt format: one safetensors file; its header metadata holds a JSON document with the format
version, the variant, the full model config, the vocabulary and training progress. Loading never
executes code: safetensors holds only tensors, and a reference `.params` file (a pickled state
dict) is read with torch.load(weights_only=True), which refuses anything but tensors and plain
containers. Every write is atomic (factgpt.outputs), so a crash never leaves a half-written
checkpoint.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from factgpt.config import GPTConfig
from factgpt.data import Vocab
from factgpt.errors import FactgptError
from factgpt.model import GPT
from factgpt.outputs import atomic_write_bytes

FORMAT = "factgpt-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    config: GPTConfig
    state_dict: dict[str, torch.Tensor]
    vocab: Vocab | None  # None for a reference .params file (it carries no vocabulary)
    progress: dict = field(default_factory=dict)  # stage, epochs, steps, tokens, ...
    source: str = "factgpt"  # "factgpt" or "reference"

    def build_model(self) -> GPT:
        model = GPT(self.config)
        model.load_state_dict(self.state_dict)
        return model


def save_checkpoint(path: str | Path, model: GPT, vocab: Vocab, progress: dict | None = None) -> None:
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "variant": model.config.variant,
        "config": model.config.identity(),
        "vocab": vocab.chars,
        "progress": progress or {},
    }
    _write(path, model.state_dict(), meta)


def _write(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Tensors (moved to the CPU) and factgpt's JSON in the safetensors header, written atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(tensors, metadata={"factgpt": json.dumps(meta)}))


def _factgpt_metadata(raw: bytes) -> dict:
    """The JSON document factgpt keeps in a safetensors header (8-byte length, then the header)."""
    header_len = int.from_bytes(raw[:8], "little")
    return json.loads(json.loads(raw[8:8 + header_len])["__metadata__"]["factgpt"])


def _strip_reference_buffers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in sd.items() if not k.endswith("attn.mask")}


def _config_from_reference(sd: dict[str, torch.Tensor], n_head: int) -> GPTConfig:
    """Infer the architecture of a reference state dict from its tensor shapes."""
    try:
        _, block_size, n_embd = sd["pos_emb"].shape
        vocab_size = sd["tok_emb.weight"].shape[0]
    except (KeyError, ValueError):
        raise ValueError("no pos_emb / tok_emb.weight of the expected shapes") from None
    n_blocks = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    perceiver = "down_block.C" in sd
    if perceiver and sd["down_block.C"].dim() != 3:
        raise ValueError("down_block.C is not a (1, m, n_embd) basis")
    m = sd["down_block.C"].shape[1] if perceiver else None
    return GPTConfig(vocab_size=vocab_size, block_size=block_size,
                     n_layer=n_blocks + 2 if perceiver else n_blocks, n_head=n_head,
                     n_embd=n_embd, perceiver=perceiver, bottleneck_dim=m)


def load_checkpoint(path: str | Path, *, n_head: int = 8) -> Checkpoint:
    """Load a factgpt checkpoint or a reference `.params` state dict, executing no code.

    n_head is used only for reference files, whose tensors do not tell the head count.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FactgptError("no such checkpoint", path=path) from None
    except OSError as e:
        raise FactgptError(f"cannot read: {e.strerror}", path=path) from None
    if raw[:2] == b"PK":  # a torch.save zip archive: the reference's format
        return _load_reference(path, n_head)
    try:
        tensors, meta = st_load(raw), _factgpt_metadata(raw)
    except (SafetensorError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        raise FactgptError("not a factgpt checkpoint or reference .params file, or it is "
                           "truncated or corrupted", path=path) from None
    if not isinstance(meta, dict):
        raise FactgptError("not a factgpt checkpoint: its factgpt header is not a JSON object", path=path)
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise FactgptError(f"unsupported checkpoint format {meta.get('format')} "
                           f"v{meta.get('version')}", path=path)
    try:  # a header edited by hand, or written by another program, must not end in a traceback
        config = GPTConfig(**meta["config"])
        ckpt = Checkpoint(config, tensors, Vocab(meta["vocab"]), meta.get("progress", {}), "factgpt")
        if len(ckpt.vocab) != config.vocab_size or not isinstance(ckpt.progress, dict):
            raise ValueError(f"a vocabulary of {len(ckpt.vocab)} characters for vocab_size {config.vocab_size}")
    except (KeyError, TypeError, ValueError, AttributeError, FactgptError) as e:
        raise FactgptError(f"the checkpoint's header is malformed ({type(e).__name__}: {e})", path=path,
                           hint="it was edited or written by another program: use it as factgpt wrote it") from None
    _check_tensors(ckpt, path)
    return ckpt


def _load_reference(path: Path, n_head: int) -> Checkpoint:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise FactgptError("refused to load: the file holds objects other than tensors, and "
                           f"loading it could run code ({str(e).splitlines()[0][:120]})", path=path,
                           hint="only state dicts of tensors are read") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError):
        raise FactgptError("the checkpoint is truncated or corrupted", path=path) from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise FactgptError("not a state dict of tensors", path=path)
    sd = _strip_reference_buffers(sd)
    try:
        config = _config_from_reference(sd, n_head)
    except ValueError as e:
        raise FactgptError(f"not a GPT state dict: {e}", path=path) from None
    ckpt = Checkpoint(config, sd, None, {}, "reference")
    _check_tensors(ckpt, path)
    return ckpt


def _check_tensors(ckpt: Checkpoint, path: Path) -> None:
    expected = {k: v.shape for k, v in GPT(ckpt.config).state_dict().items()}
    got = {k: v.shape for k, v in ckpt.state_dict.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))[:3]
        extra = sorted(set(got) - set(expected))[:3]
        odd = [k for k in expected if k in got and expected[k] != got[k]][:3]
        raise FactgptError(f"tensors do not match the model (missing {missing}, unexpected "
                           f"{extra}, wrong shape {odd})", path=path)


def check_compatible(ckpt: Checkpoint, path: str | Path, *, variant: str,
                     shape: dict[str, int], vocab: Vocab, corpus: str | Path) -> None:
    """Refuse, with one line, a checkpoint of another variant or vocabulary, or one whose shape
    fields (n_layer, n_head, n_embd, bottleneck_dim) differ from the values in `shape`."""
    c = ckpt.config
    if c.variant != variant:
        raise FactgptError(f"this is a {c.variant} checkpoint, but the {variant} variant was asked "
                           "for", path=path, hint=f"run with `{c.variant}`")
    for name, want in shape.items():
        if name == "bottleneck_dim" and not c.perceiver:
            continue  # the vanilla model has no m
        got = getattr(c, name)
        if got != want:
            raise FactgptError(f"this {c.variant} checkpoint has {name} {got}, not {want}", path=path,
                               hint=f"pass --{name} {got}, or leave --{name} out to take the checkpoint's")
    if ckpt.vocab is not None and ckpt.vocab != vocab:
        raise FactgptError(f"the checkpoint's vocabulary ({len(ckpt.vocab)} symbols) differs from "
                           f"that of {corpus} ({len(vocab)} symbols)", path=path,
                           hint="use the pretraining corpus the checkpoint was trained with")
    if ckpt.vocab is None and c.vocab_size != len(vocab):
        raise FactgptError(f"the checkpoint has {c.vocab_size} symbols but {corpus} gives "
                           f"{len(vocab)}", path=path,
                           hint="use the pretraining corpus the checkpoint was trained with")


# -- training state (resume) --------------------------------------------------------------------

RESUME_FORMAT = "factgpt-training-state"


def resume_path_for(params_path: str | Path) -> Path:
    """Where the resume point of a run writing `params_path` lives."""
    return Path(str(params_path) + ".resume")


def save_training_state(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    _write(path, tensors, {"format": RESUME_FORMAT, "version": FORMAT_VERSION, **meta})


def load_training_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    path = Path(path)
    try:
        raw = path.read_bytes()
        tensors, meta = st_load(raw), _factgpt_metadata(raw)
    except FileNotFoundError:
        raise FactgptError("no resume point here", path=path) from None
    except (SafetensorError, ValueError, KeyError, TypeError, OSError):
        raise FactgptError("the resume point is truncated or corrupted", path=path,
                           hint="delete it to start over") from None
    if not isinstance(meta, dict) or meta.get("format") != RESUME_FORMAT:
        raise FactgptError("not a factgpt resume point", path=path)
    missing = [k for k in ("model", "config", "state", "param_groups") if k not in meta]
    if missing or "rng.torch" not in tensors:
        raise FactgptError(f"the resume point lacks {', '.join(missing) or 'rng.torch'}", path=path,
                           hint="delete it to start over")
    return tensors, meta
