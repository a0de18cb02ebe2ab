"""`factgpt bench`: the machine and its ceiling, then the reference path and the fast path side by
side, in one run.

The machine: its processor and the flags that decide its speed (AMX-BF16, AVX512-BF16, AVX512F,
AVX2), and the rate its matmuls reach at the model's shapes, in bf16 and fp32. For pretraining and
finetuning batches it times a few optimiser steps of each path (after one warm-up step) and reports
examples/s, useful (non-PAD target) tokens/s, the model's FLOPs/s and its MFU (model FLOPs
utilisation) against that matmul rate; for evaluate it times the reference's one-question-at-a-time
decoding on a sample and the batched KV-cache decoding on every question, and checks that both give
the same answers on the sample.

Model FLOPs count useful work only, as nanoGPT and the PaLM paper count them, forward and backward:
6 x the parameters of the model's matmuls (every linear layer and the head; the embeddings are
lookups) x the useful positions of the examples (up to each one's last target), plus the attention,
12 x n_embd x n_layer x the causal pairs within each example (its query-key products and weighted
sums). Padding, masked entries and recomputation do not count, so the reference engine and the fast
one are credited the same FLOPs for the same examples.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from factgpt.batches import useful_lengths
from factgpt.config import PERCEIVER_M, REFERENCE, GPTConfig, TrainConfig, with_layout
from factgpt.data import read_questions
from factgpt.evaluate import predict
from factgpt.model import GPT, Dropout
from factgpt.runtime import synchronize
from factgpt.stages import ModelSpec, load_corpus, load_for_inference, load_pairs, starting_model
from factgpt.train import Trainer


class FirstN:
    """The first n examples of a dataset (same draws, same order), for short timed runs."""

    def __init__(self, ds, n: int) -> None:
        self.ds, self.n = ds, min(n, len(ds))
        self.seq_len = ds.seq_len
        if hasattr(ds, "generator"):
            self.generator = ds.generator

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return self.ds[i]

    def draw_batch(self, idx):
        return self.ds.draw_batch(idx)

    def reseed(self, seed: int) -> None:
        self.ds.reseed(seed)


@dataclass
class Variant:
    """One way to run the fast path, for the row that shows what a change bought."""
    label: str
    precision: str = "auto"
    layout: str | None = None  # "grouped" or "packed" (None: the stage's own, packed for vanilla pretraining)
    torch_dropout: bool = False  # torch's Bernoulli masks instead of model.keep_mask
    group_tokens: int | None = None  # ids per group of the grouped layout (None: TrainConfig's)
    kernels: str = "torch"  # "fused": factgpt's fused CPU kernels (factgpt.kernels)


# Each row adds one change to the one above it; the fourth takes the stage's own layout (for vanilla
# pretraining packed, so there it also undoes the grouping); the last is the default.
FAST_VARIANTS = (
    Variant("fast fp32, packed rows, torch's dropout masks", precision="fp32", layout="packed", torch_dropout=True),
    Variant("+ fast dropout masks", precision="fp32", layout="packed"),
    Variant("+ rows grouped by length", precision="fp32", layout="grouped"),
    Variant("+ precision auto, the stage's own layout"),
    Variant("+ fused kernels (the default)", kernels="fused"),
)


@dataclass
class Row:
    stage: str
    path: str  # the label of the path and its settings
    examples_per_s: float
    useful_tokens_per_s: float
    loss: float
    precision: str = "fp32"  # what it computed in
    flops_per_s: float | None = None  # model FLOPs (module docstring) a second; None: not counted (the perceiver)


@dataclass
class Machine:
    processor: str
    flags: list[str]  # of AMX-BF16, AVX512-BF16, AVX512F, AVX2: the ones this processor has
    threads: int
    matmul_gflops: dict[str, float]  # {"bf16": ..., "fp32": ...}: the matmul rate at the model's shapes


FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16", "avx512f": "AVX512F", "avx2": "AVX2"}


def processor() -> tuple[str, list[str]]:
    """The processor's name and the flags among FLAGS it has (from /proc/cpuinfo; elsewhere platform's)."""
    import platform

    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine(), []
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")),
                platform.machine())
    have = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    return name, [label for flag, label in FLAGS.items() if flag in have]


def matmul_gflops(dtype: torch.dtype, n_embd: int, vocab: int, tokens: int = 8192, repeats: int = 5,
                  device: torch.device | str = "cpu") -> float:
    """GFLOP/s of the model's matmuls, one of each shape a block and the head has ((tokens, C) times
    C x C for q, k, v and the projection, C x 4C, 4C x C, C x vocab), the best of `repeats` passes."""
    shapes = [(n_embd, n_embd)] * 4 + [(n_embd, 4 * n_embd), (4 * n_embd, n_embd), (n_embd, vocab)]
    gen = torch.Generator().manual_seed(0)
    pairs = [tuple(torch.randn(*shape, generator=gen).to(device, dtype) for shape in ((tokens, k), (k, n)))
             for k, n in shapes]
    flops = sum(2 * tokens * k * n for k, n in shapes)
    best = float("inf")
    for _ in range(repeats + 1):  # the first pass warms up
        t0 = time.perf_counter()
        for a, b in pairs:
            a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def model_flops(config: GPTConfig, lengths: list[int]) -> float:
    """Model FLOPs of one optimiser step (forward and backward) on examples of these useful lengths:
    6 x matmul parameters x positions + 12 x n_embd x n_layer x causal pairs (module docstring)."""
    C, n_layer = config.n_embd, config.n_layer
    matmul_params = n_layer * 12 * C * C + C * config.vocab_size  # q, k, v, proj (4 C^2), MLP (8 C^2); the head
    pairs = sum(n * (n + 1) // 2 for n in lengths)
    return 6 * matmul_params * sum(lengths) + 12 * C * n_layer * pairs


@dataclass
class DecodeResult:
    reference_qps: float  # questions/s, one at a time with the whole prefix recomputed
    fast_qps: float  # questions/s, batched with the KV cache
    fast_seconds: float  # all questions, batched
    n_questions: int
    sample_agrees: bool  # batched answers equal one-at-a-time answers on the timed sample
    perceiver_seconds: float | None = None  # all questions, perceiver, batched with its cache


@dataclass
class BenchResult:
    rows: list[Row]  # training: the reference path, each fast variant, then the perceiver
    decode: DecodeResult
    n_documents: int  # documents in the timed corpus: what one pretraining epoch shows
    machine: Machine | None = None

    def mfu(self, row: Row) -> float | None:
        """The row's model FLOPs/s over the matmul rate of the precision it ran in."""
        if row.flops_per_s is None or self.machine is None:
            return None
        return row.flops_per_s / (self.machine.matmul_gflops[row.precision] * 1e9)


def time_training(model: GPT, ds, steps: int, path: str, variant: Variant, base: TrainConfig,
                  device: torch.device | str = "cpu") -> Row:
    """Examples/s and useful tokens/s over `steps` optimiser steps of `base`'s batch size, after one
    warm-up step. Every step ends in loss.item(), so on a GPU the clock stops after its kernels ran."""
    def trainer(n_steps: int) -> Trainer:
        tc = replace(base, max_epochs=1, engine=path, precision="fp32" if path == "reference" else variant.precision,
                     kernels=variant.kernels)
        tc = with_layout(tc, group_tokens=variant.group_tokens,
                         **({"layout": variant.layout} if variant.layout else {}))
        t = Trainer(model, FirstN(ds, n_steps * base.batch_size), tc, device=device, progress=False)
        for m in model.modules():
            if isinstance(m, Dropout) and variant.torch_dropout:
                m.engine = "reference"
        return t

    trainer(1).train()  # warm-up: first-call allocations, kernel selection
    timed = trainer(steps)
    t0 = time.perf_counter()
    st = timed.train()
    dt = time.perf_counter() - t0
    label = "reference fp32" if path == "reference" else variant.label
    flops = None
    if not model.perceiver:  # the examples the timed steps drew, drawn again: their useful lengths
        examples = FirstN(ds, steps * base.batch_size)
        if hasattr(ds, "reseed"):  # span corruption draws: from where the Trainer started them
            ds.reseed(base.seed + 1)
        lengths = useful_lengths(ds.draw_batch(torch.arange(len(examples)))[1]).tolist()
        flops = model_flops(model.config, lengths) / dt
    return Row("", label, st.examples / dt, st.useful_tokens / dt, st.losses[-1], timed.precision, flops)


def run_bench(data_dir: str | Path, *, steps: int = 4, params: str | Path | None = None,
              decode_sample: int = 20, variants=FAST_VARIANTS, seed: int = 0, bottleneck_dim: int = PERCEIVER_M,
              device: torch.device | str = "cpu", log=None) -> BenchResult:
    """Training rows, the decoding result and the corpus's size; `log` (a callable) hears progress. Pretraining
    and finetuning are timed on the reference path, then on each fast variant, from the same
    starting model; the perceiver's pretraining at the default settings closes the table. Model and
    batch sizes are the reference recipe's (factgpt.config.REFERENCE)."""
    data_dir = Path(data_dir)
    say = log or (lambda *_: None)
    corpus_path = data_dir / "wiki.txt"
    corpus = load_corpus(corpus_path, seed=seed)
    say("timing the matmuls at the model's shapes, bf16 and fp32")
    name, flags = processor()
    rates = {p: matmul_gflops(dtype, REFERENCE.n_embd, corpus.vocab_size, device=device)
             for p, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))}
    machine = Machine(name, flags, torch.get_num_threads(), rates)
    names = load_pairs(corpus, data_dir / "birth_places_train.tsv")
    base = starting_model(ModelSpec("vanilla", REFERENCE), corpus, corpus_path, seed)
    # loaded (and checked against the corpus's vocabulary) before minutes of timing, not after
    with torch.random.fork_rng(devices=[]):  # building it must not move the timed rows' draws
        decoder = load_for_inference(params, corpus_path, device=device)[0] if params is not None else None
    default = FAST_VARIANTS[-1]
    runs = [("reference", default)] + [("fast", v) for v in variants]
    rows = []
    # the reference recipe's batch sizes and schedule; every row steps at the finetuning rate
    pretrain = replace(REFERENCE.pretrain_config(len(corpus), seed), learning_rate=REFERENCE.finetune.learning_rate)
    finetune = REFERENCE.finetune_config(len(corpus), True, seed)
    for stage, ds, tc in (("pretrain", corpus, pretrain), ("finetune", names, finetune)):
        for path, variant in runs:
            say(f"timing {stage} {path} {variant.label} ({steps} steps of {tc.batch_size})")
            r = time_training(copy.deepcopy(base), ds, steps, path, variant, tc, device)
            r.stage = stage
            rows.append(r)
    perceiver = starting_model(ModelSpec("perceiver", replace(REFERENCE, bottleneck_dim=bottleneck_dim)), corpus,
                               corpus_path, seed)
    say(f"timing pretrain perceiver m={bottleneck_dim} ({steps} steps of {pretrain.batch_size})")
    own = replace(REFERENCE.pretrain_config(len(corpus), seed, perceiver=True),
                  learning_rate=REFERENCE.finetune.learning_rate)
    r = time_training(perceiver, corpus, steps, "fast", default, own, device)  # its own layout: grouped
    r.stage, r.path = "pretrain", f"perceiver m={bottleneck_dim}, {default.label}"
    rows.append(r)

    model = decoder if decoder is not None else base.to(device).eval()
    questions = read_questions(data_dir / "birth_dev.tsv")
    decode_sample = min(decode_sample, len(questions))
    say(f"decoding {decode_sample} questions one at a time")
    t0 = time.perf_counter()
    ref = predict(model, questions[:decode_sample], corpus.vocab, engine="reference")
    ref_qps = decode_sample / (time.perf_counter() - t0)
    say(f"decoding all {len(questions)} questions batched")
    t0 = time.perf_counter()
    fast = predict(model, questions, corpus.vocab, engine="fast")
    fast_s = time.perf_counter() - t0
    say(f"decoding all {len(questions)} questions batched, perceiver")
    perceiver.eval()
    t0 = time.perf_counter()
    predict(perceiver, questions, corpus.vocab, engine="fast")
    perceiver_s = time.perf_counter() - t0
    decoded = DecodeResult(ref_qps, len(questions) / fast_s, fast_s, len(questions), fast[:decode_sample] == ref,
                           perceiver_s)
    return BenchResult(rows, decoded, len(corpus), machine)


def format_report(result: BenchResult) -> str:
    rows, decode, n_documents, m = result.rows, result.decode, result.n_documents, result.machine
    lines = []
    if m is not None:
        lines += [f"processor: {m.processor} ({', '.join(m.flags) or 'none of ' + ', '.join(FLAGS.values())}), "
                  f"{m.threads} threads; matmuls at the model's shapes: bf16 {m.matmul_gflops['bf16']:.0f} GFLOP/s, "
                  f"fp32 {m.matmul_gflops['fp32']:.0f} GFLOP/s", ""]
    lines += ["| stage | path | examples/s | useful tokens/s | speed-up | model GFLOP/s | MFU | last loss |",
              "|---|---|---|---|---|---|---|---|"]
    ref = {r.stage: r.examples_per_s for r in rows if r.path.startswith("reference")}
    for r in rows:
        mfu = result.mfu(r)
        flops = "-" if r.flops_per_s is None else f"{r.flops_per_s / 1e9:.1f}"
        lines.append(f"| {r.stage} | {r.path} | {r.examples_per_s:.1f} | {r.useful_tokens_per_s:,.0f} | "
                     f"{r.examples_per_s / ref[r.stage]:.2f}x | {flops} | "
                     f"{'-' if mfu is None else f'{100 * mfu:.1f}% ({r.precision})'} | {r.loss:.3f} |")
    d = decode
    lines += ["", f"| evaluate ({d.n_questions} questions) | questions/s | all take |", "|---|---|---|",
              f"| reference (one at a time) | {d.reference_qps:.1f} | "
              f"{d.n_questions / d.reference_qps:.1f} s (extrapolated) |",
              f"| fast (batched, KV cache) | {d.fast_qps:.1f} | {d.fast_seconds:.2f} s |"]
    if d.perceiver_seconds is not None:
        lines.append(f"| fast, perceiver (batched, its cache) | {d.n_questions / d.perceiver_seconds:.1f} | "
                     f"{d.perceiver_seconds:.2f} s ({d.perceiver_seconds / d.fast_seconds:.2f}x vanilla) |")
    lines += ["", f"fast answers equal the reference's on the timed sample: {d.sample_agrees}"]
    pre = [r for r in rows if r.stage == "pretrain"]
    vanilla = next(r for r in pre if r.path == FAST_VARIANTS[-1].label)  # the default fast path
    perceiver = pre[-1]
    ev, ep = n_documents / vanilla.examples_per_s, n_documents / perceiver.examples_per_s
    n, batch = REFERENCE.pretrain.max_epochs, REFERENCE.pretrain.batch_size
    lines += ["", f"One pretraining epoch ({n_documents:,} documents) at the default settings: vanilla "
              f"{ev:.1f} s, {perceiver.path.split(',')[0]} {ep:.1f} s; the reference recipe's {n} epochs: "
              f"{n * ev / 3600:.1f} h + {n * ep / 3600:.1f} h (batch {batch}, the reference's dropout)."]
    return "\n".join(lines)
