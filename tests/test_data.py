"""The dataset specifications, checked over many random draws, and strict file reading."""

from __future__ import annotations

import pytest
import torch

from factgpt.batches import pack, useful_lengths
from factgpt.data import (
    MASK_CHAR,
    MASK_ID,
    PAD_CHAR,
    PAD_ID,
    CharCorruptionDataset,
    NameDataset,
    Vocab,
    read_questions,
    read_text,
    split_lines,
)
from factgpt.errors import FactgptError

from conftest import LONG


def decode(ds, ids):
    return "".join(ds.itos[int(i)] for i in ids)


def test_vocabulary_layout():
    ds = CharCorruptionDataset("cab\nba", 16)
    assert ds.itos[0] == PAD_CHAR == "\u25a1" and ds.itos[1] == MASK_CHAR == "\u2047"
    assert [ds.itos[i] for i in range(2, ds.vocab_size)] == ["\n", "a", "b", "c"]
    assert ds.stoi == {c: i for i, c in ds.itos.items()}
    assert ds.vocab_size == 6 and ds.block_size == 16


def test_corruption_spec_over_many_draws():
    bs = 128
    ds = CharCorruptionDataset(LONG + "\nshort doc\n", bs, seed=3)
    n_draws = 20000
    x, y = ds.draw_batch(torch.zeros(n_draws, dtype=torch.long))  # document 0, many times
    assert x.shape == y.shape == (n_draws, bs)
    lengths, ratios = set(), []
    for xi, yi in zip(x[:4000], y[:4000]):
        s = decode(ds, xi) + decode(ds, yi[-1:])
        assert decode(ds, xi[1:]) == decode(ds, yi[:-1])  # y is x shifted by one
        body = s.rstrip(PAD_CHAR)
        prefix, suffix, masked = body.split(MASK_CHAR)
        n = len(prefix) + len(suffix) + len(masked)
        assert prefix + masked + suffix == LONG[:n]  # the pieces rebuild the truncated document
        assert 4 <= n <= int(bs * 7 / 8)
        assert len(masked) >= 1
        lengths.add(n)
        ratios.append(len(masked) / n)
    # every truncation length is possible: check on the spans of all draws
    n_all, m_all, _ = ds.spans(torch.zeros(n_draws, dtype=torch.long), torch.rand(n_draws, 3, dtype=torch.float64))
    assert set(n_all.tolist()) == set(range(4, int(bs * 7 / 8) + 1))
    mean_ratio = sum(ratios) / len(ratios)
    assert 0.22 < mean_ratio < 0.28, mean_ratio  # a quarter on average
    assert min(ratios) < 0.1 and max(ratios) > 0.4  # and random, more or less than a quarter


def test_short_and_empty_documents():
    ds = CharCorruptionDataset("abc\n", 32)  # documents "abc" and "" (after the final newline)
    assert len(ds) == 2
    for _ in range(50):
        x, y = ds[0]
        body = (decode(ds, x) + decode(ds, y[-1:])).rstrip(PAD_CHAR)
        p, s, m = body.split(MASK_CHAR)
        assert p + m + s == "abc"
    x, y = ds[1]
    assert x[0] == MASK_ID and y[0] == MASK_ID and (y[1:] == PAD_ID).all()


def test_getitem_and_batch_draw_give_the_same_examples():
    text = LONG + "\n" + LONG[::-1] + "\nthird line here\n"
    a = CharCorruptionDataset(text, 64, seed=5)
    b = CharCorruptionDataset(text, 64, seed=5)
    one = [a[i % 3] for i in range(30)]
    xb, yb = b.draw_batch(torch.arange(30) % 3)
    assert torch.equal(torch.stack([o[0] for o in one]), xb)
    assert torch.equal(torch.stack([o[1] for o in one]), yb)


def test_reserved_characters_rejected():
    with pytest.raises(FactgptError, match=r"corpus.txt:2: .*reserved"):
        CharCorruptionDataset("ok\nbad \u2047 here\n", 32, source="corpus.txt")


def test_name_dataset_spec():
    pre = CharCorruptionDataset("Where was Naïma born?\tParis\nabcdefghijklmnopqrstuvwxyz\n", 48)
    ds = NameDataset(pre, "Where was Naïma born?\tParis", source="t.tsv")  # no final newline
    assert len(ds) == 1  # the last line counts
    x, y = ds[0]
    q = "Where was Naïma born?"
    assert x.shape == y.shape == (47,)
    assert decode(ds, x).startswith(q + MASK_CHAR + "Paris" + MASK_CHAR)  # "ï" kept
    assert decode(ds, y) == PAD_CHAR * (len(q) - 1) + MASK_CHAR + "Paris" + MASK_CHAR + PAD_CHAR * (47 - len(q) - 6)
    # y is x shifted by one outside the question
    assert torch.equal(x[len(q):], y[len(q) - 1: -1])


@pytest.mark.parametrize("text,match", [
    ("Where was A born?Paris\n", r"t.tsv:1: line has no tab"),
    ("Where was A born?\tParis\n\nWhere was B born?\tRome\n", r"t.tsv:2: empty line"),
    ("Where was A born?\tPa\tris\n", r"t.tsv:1: line has 2 tabs"),
    ("Where was Z born?\tParis\n", r"t.tsv:1: character 'Z'"),
    ("Where was A born?\t" + "a" * 40 + "\n", r"t.tsv:1: .*more than the block size"),
])
def test_name_dataset_errors(text, match):
    pre = CharCorruptionDataset("Where was A B born?\tParis Rome\na\n", 48)
    with pytest.raises(FactgptError, match=match):
        NameDataset(pre, text, source="t.tsv")


def test_read_text_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nsecond \xff line\n")
    with pytest.raises(FactgptError, match=r"bad.txt:2: byte 0xff is not valid UTF-8"):
        read_text(bad)
    with pytest.raises(FactgptError, match=r"missing.txt: no such file"):
        read_text(tmp_path / "missing.txt")


def test_read_questions(tmp_path):
    f = tmp_path / "q.tsv"
    f.write_text("Where was A born?\tParis\r\nWhere was B born?\tRome", encoding="utf-8")
    qs = read_questions(f)
    assert [(q.question, q.answer, q.line) for q in qs] == [("Where was A born?", "Paris", 1),
                                                            ("Where was B born?", "Rome", 2)]
    f.write_text("Where was A born?\nWhere was B born?\n", encoding="utf-8")
    assert [q.answer for q in read_questions(f)] == [None, None]
    with pytest.raises(FactgptError, match=r"q.tsv:1: line has no tab"):
        read_questions(f, require_answers=True)
    f.write_text("", encoding="utf-8")
    with pytest.raises(FactgptError, match="empty"):
        read_questions(f)


def test_split_lines():
    assert split_lines("a\r\nb\n") == ["a", "b"]
    assert split_lines("a\nb") == ["a", "b"]
    assert split_lines("") == []


def test_vocab_encode_names_the_character():
    v = Vocab.from_text("abc")
    with pytest.raises(FactgptError, match=r"f:3: character 'z' \(U\+007A\)"):
        v.encode("abz", source="f", line=3)


def test_pack_keeps_every_useful_position():
    ds = CharCorruptionDataset(LONG + "\n" + LONG[5:] + "\n", 128, seed=1)
    x, y = ds.draw_batch(torch.arange(64) % 2)
    b = pack(x, y, 128)
    lengths = useful_lengths(y)
    assert b.x.shape[0] < 64  # fewer rows than examples
    assert int((b.documents >= 0).sum()) == int(lengths.sum())
    for i in range(64):  # each example's useful ids appear, in order, from position 0
        sel = b.documents == i
        assert torch.equal(b.x[sel], x[i, : lengths[i]])
        assert torch.equal(b.y[sel], y[i, : lengths[i]])
        assert torch.equal(b.positions[sel], torch.arange(int(lengths[i])))
    assert int((b.y != PAD_ID).sum()) == int((y != PAD_ID).sum())


def test_pack_of_an_empty_batch():
    # A process whose slice of a short last global batch is empty (issue: float index tensor).
    x = torch.zeros(0, 16, dtype=torch.long)
    b = pack(x, x.clone(), 16)
    assert b.n_examples == 0
    for t in (b.x, b.y, b.positions, b.documents):
        assert t.shape == (0, 16) and t.dtype == torch.long
    assert useful_lengths(x).shape == (0,)
