"""factgpt computes what the study's reference code computes (../shared/conformance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factgpt.checkpoint import load_checkpoint
from factgpt.data import CharCorruptionDataset, read_questions, read_text
from factgpt.evaluate import predict, score
from factgpt.model import count_parameters

from conftest import CONFORMANCE, DATA, need

pytestmark = need(CONFORMANCE / "vanilla_ref.params")


@pytest.fixture(scope="module")
def reference():
    ckpt = load_checkpoint(CONFORMANCE / "vanilla_ref.params")
    return ckpt, ckpt.build_model().eval()


def test_reference_checkpoint_loads_weights_only(reference):
    ckpt, model = reference
    assert ckpt.source == "reference"
    assert count_parameters(model) == 3_323_392
    c = ckpt.config
    assert (c.vocab_size, c.block_size, c.n_layer, c.n_embd, c.perceiver) == (256, 128, 4, 256, False)


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_logits_match_the_reference(reference, impl):
    _, model = reference
    model.set_engine(impl)
    ids = torch.from_numpy(np.load(CONFORMANCE / "input_ids.npy"))
    want = torch.from_numpy(np.load(CONFORMANCE / "logits.npy"))
    with torch.no_grad():
        got, _ = model(ids)
    assert (got - want).abs().max().item() < 1e-4


def test_vocabulary_is_the_reference_one():
    ds = CharCorruptionDataset(read_text(DATA / "wiki.txt"), 128)
    assert ds.vocab_size == 256 and len(ds) == 2938
    ids = np.load(CONFORMANCE / "input_ids.npy")
    q = read_questions(DATA / "birth_dev.tsv")[0].question
    assert ds.vocab.decode(ids[0][: len(q) + 1]) == q + "\u2047"


def test_greedy_predictions_match_the_reference_line_for_line(reference):
    _, model = reference
    model.set_engine("fast")
    questions = read_questions(DATA / "birth_dev.tsv")
    vocab = CharCorruptionDataset(read_text(DATA / "wiki.txt"), 128).vocab
    preds = predict(model, questions, vocab, engine="fast")
    want = (CONFORMANCE / "vanilla_ref.dev.predictions").read_text(encoding="utf-8").split("\n")[:-1]
    assert preds == want
    assert score(questions, preds).correct == 5


def test_one_at_a_time_decoding_matches_on_a_sample(reference):
    _, model = reference
    questions = read_questions(DATA / "birth_dev.tsv")[:4]
    vocab = CharCorruptionDataset(read_text(DATA / "wiki.txt"), 128).vocab
    want = (CONFORMANCE / "vanilla_ref.dev.predictions").read_text(encoding="utf-8").split("\n")[:4]
    assert predict(model, questions, vocab, engine="reference") == want
