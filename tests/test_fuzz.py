"""Property and fuzz tests: every input either works or gets the one clear FactgptError."""

from __future__ import annotations

import pickle

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factgpt.checkpoint import load_checkpoint
from factgpt.data import MASK_CHAR, PAD_CHAR, CharCorruptionDataset, NameDataset, read_questions, read_text, split_lines
from factgpt.errors import FactgptError

# derandomize: the same examples every run, so that CI is never red by the luck of the draw
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
                derandomize=True)
# any character, with spaces and tabs (the ones the readers' rules are about) drawn often
lines = st.lists(st.text(alphabet=st.one_of(st.characters(blacklist_categories=("Cs",)), st.sampled_from(" \t")),
                         max_size=200), max_size=8)
endings = st.sampled_from(["\n", "\r\n"])


@FAST
@given(data=st.binary(max_size=400))
def test_read_text_any_bytes(tmp_path, data):
    f = tmp_path / "any.txt"
    f.write_bytes(data)
    try:
        assert read_text(f) == data.decode("utf-8")
    except FactgptError as e:
        assert str(e).startswith(f"{f}:") and "UTF-8" in str(e)
        with pytest.raises(UnicodeDecodeError):  # refused only if it really is not UTF-8
            data.decode("utf-8")


def questions_file_problem(content: str) -> str | None:
    """Why a question file is bad, by the rules the docs give, written out again here (None: it is
    good): no line; an empty line; a file that mixes labelled lines (one tab) with unlabelled ones
    (none); a labelled line with several tabs or an empty question or answer."""
    rows = split_lines(content)
    if not rows:
        return "empty file"
    labelled = "\t" in rows[0]
    for row in rows:
        if not row.strip():
            return "empty line"
        if ("\t" in row) != labelled:
            return "mixed"
        if labelled and (row.count("\t") != 1 or not all(row.split("\t"))):
            return "bad pair"
    return None


@FAST
@given(rows=lines, ending=endings, final=st.booleans())
def test_read_questions_any_text(tmp_path, rows, ending, final):
    f = tmp_path / "q.tsv"
    content = ending.join(rows) + (ending if final and rows else "")
    f.write_bytes(content.encode("utf-8"))
    try:
        qs = read_questions(f)
    except FactgptError as e:
        assert str(e).startswith(f"{f}")
        assert questions_file_problem(content) is not None  # refused only if it really is bad
        return
    assert questions_file_problem(content) is None
    assert len(qs) == len(split_lines(content))
    for q in qs:
        assert "\n" not in q.question and not q.question.endswith("\r") and "\t" not in q.question


@FAST
@given(text=st.text(max_size=600), block=st.integers(min_value=8, max_value=64))
def test_corruption_dataset_any_text(text, block):
    try:
        ds = CharCorruptionDataset(text, block, source="c.txt")
    except FactgptError as e:
        assert "c.txt" in str(e) and (not text.strip() or PAD_CHAR in text or MASK_CHAR in text)
        return
    x, y = ds.draw_batch(torch.arange(len(ds)))
    assert x.shape == (len(ds), block) and torch.equal(x[:, 1:], y[:, :-1])
    for i in range(min(len(ds), 5)):
        body = (ds.vocab.decode(x[i]) + ds.vocab.decode(y[i, -1:])).rstrip(PAD_CHAR)
        assert body.count(MASK_CHAR) == 2
        p, s, m = body.split(MASK_CHAR)
        assert ds.data[i].startswith(p + m + s)


@FAST
@given(rows=st.lists(st.tuples(st.text(max_size=60), st.text(max_size=30)), max_size=6), ending=endings,
       junk=st.sampled_from(["", "\n\n", "no tab here\n", "a\tb\tc\n", "\u2603\t\u2603\n"]))
def test_name_dataset_any_tsv(rows, ending, junk):
    pre = CharCorruptionDataset("Where was born? abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\t", 64)
    text = ending.join(f"{q}\t{a}" for q, a in rows) + ending + junk
    try:
        ds = NameDataset(pre, text, source="t.tsv")
    except FactgptError as e:
        assert str(e).startswith("t.tsv")
        assert pairs_file_problem(text, pre) is not None  # refused only if it really is bad
        return
    assert pairs_file_problem(text, pre) is None
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == y.shape == (63,)


def pairs_file_problem(text: str, pre: CharCorruptionDataset) -> str | None:
    """Why a finetuning file is bad for a corpus, by the rules the docs give (None: it is good): no
    line; an empty line; not exactly one tab; an empty question or answer; a character outside
    the corpus's vocabulary; a pair that does not fit the block with its two ⁇."""
    rows = split_lines(text)
    if not rows:
        return "no line"
    for row in rows:
        if not row.strip():
            return "empty line"
        if row.count("\t") != 1 or not all(row.split("\t")):
            return "bad pair"
        q, a = row.split("\t")
        if any(c not in pre.vocab.stoi for c in q + a) or len(q) + len(a) + 2 > pre.block_size:
            return "does not fit"
    return None


LETTERS = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@FAST
@given(rows=st.lists(st.text(alphabet=LETTERS + "?", min_size=1, max_size=40).filter(str.strip), min_size=1,
                     max_size=6), ending=endings, final=st.booleans())
def test_read_questions_reads_every_well_formed_file(tmp_path, rows, ending, final):
    """Bare questions, spaces anywhere in them: every one reads back as written."""
    f = tmp_path / "q.tsv"
    f.write_text(ending.join(rows) + (ending if final else ""), encoding="utf-8", newline="")
    assert [q.question for q in read_questions(f)] == rows


@FAST
@given(rows=st.lists(st.tuples(st.text(alphabet=LETTERS + "?", max_size=40), st.text(alphabet=LETTERS, max_size=15))
                     .map(lambda qa: ("W" + qa[0], "P" + qa[1])), min_size=1, max_size=6),
       ending=endings, final=st.booleans())
def test_name_dataset_reads_every_well_formed_tsv(rows, ending, final):
    """The test above mostly meets bad input; here every file is well formed and must read back:
    one example a line, x the pair as ``question⁇answer⁇`` and y learning the answer only."""
    pre = CharCorruptionDataset("Where was born? " + LETTERS + "\t", 64)
    ds = NameDataset(pre, ending.join(f"{q}\t{a}" for q, a in rows) + (ending if final else ""), source="t.tsv")
    assert len(ds) == len(rows)
    for i, (q, a) in enumerate(rows):
        x, y = ds[i]
        assert pre.vocab.decode(x).rstrip(PAD_CHAR) == f"{q}{MASK_CHAR}{a}{MASK_CHAR}"
        assert pre.vocab.decode(y).strip(PAD_CHAR) == f"{MASK_CHAR}{a}{MASK_CHAR}"  # PAD over the question


def test_pickle_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    path = tmp_path / "evil.params"
    torch.save({"pos_emb": torch.zeros(1, 4, 8), "x": Evil()}, path)
    try:
        load_checkpoint(path)
    except FactgptError as e:
        assert "refused" in str(e) and "code" in str(e)
    else:
        raise AssertionError("a pickle with a callable was loaded")


def test_truncated_reference_checkpoint(tmp_path):
    path = tmp_path / "t.params"
    torch.save({"pos_emb": torch.zeros(1, 4, 8)}, path)
    path.write_bytes(path.read_bytes()[:60])
    try:
        load_checkpoint(path)
    except FactgptError as e:
        assert "truncated or corrupted" in str(e)
    else:
        raise AssertionError("loaded a truncated file")


def test_pickle_module_is_not_used_for_factgpt_checkpoints(tmp_path):
    from factgpt.checkpoint import save_checkpoint
    from factgpt.config import GPTConfig
    from factgpt.data import Vocab
    from factgpt.model import GPT
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=1, n_embd=4)),
                    Vocab(list("□⁇abc")))
    raw = path.read_bytes()
    assert raw[8:9] == b"{" and pickle.PROTO not in raw[:2]  # a safetensors JSON header, no pickle


def _tiny_checkpoint(path):
    from factgpt.checkpoint import save_checkpoint
    from factgpt.config import GPTConfig
    from factgpt.data import Vocab
    from factgpt.model import GPT
    save_checkpoint(path, GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=1, n_embd=4)),
                    Vocab(list("□⁇abc")))


@pytest.mark.parametrize("edit", [lambda m: m["config"].update(n_wings=2), lambda m: m.pop("vocab"),
                                  lambda m: m["config"].update(n_head=0), lambda m: m["vocab"].pop(),
                                  lambda m: m["config"].update(attn_pdrop=1.5),
                                  lambda m: m["config"].update(n_layer=1.0),
                                  lambda m: m["config"].update(engine="turbo")])
def test_a_hand_edited_checkpoint_header_is_one_clear_error(edit, tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file
    path = tmp_path / "m.safetensors"
    _tiny_checkpoint(path)
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()["factgpt"])
    edit(meta)
    save_file(tensors, str(path), metadata={"factgpt": json.dumps(meta)})
    with pytest.raises(FactgptError) as e:
        load_checkpoint(path)
    assert "m.safetensors" in str(e.value)


def test_a_reference_perceiver_basis_of_the_wrong_rank_is_refused(tmp_path):
    from factgpt.config import GPTConfig
    from factgpt.model import GPT
    sd = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=2, n_head=1, n_embd=4, perceiver=True,
                       bottleneck_dim=4)).state_dict()
    sd["down_block.C"] = sd["down_block.C"][0]  # (m, n_embd): the (1, m, n_embd) basis lost a dimension
    path = tmp_path / "p.params"
    torch.save(sd, path)
    with pytest.raises(FactgptError) as e:
        load_checkpoint(path, n_head=1)
    assert "not a GPT state dict" in str(e.value)


@pytest.mark.parametrize("edit", [lambda m: m.pop("state"), lambda m: m["state"].update(n_wings=2),
                                  lambda m: m.clear()])
def test_a_damaged_resume_point_is_one_clear_error(edit, tiny_files, tmp_path, capsys, monkeypatch):
    """A resume point whose header lost a part, or gained one, is refused in one line, not a traceback."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from factgpt.checkpoint import resume_path_for

    from conftest import TINY, killed_after, one_clear_line, run
    out = tmp_path / "r.safetensors"
    argv = ["pretrain", "vanilla", str(tiny_files["corpus"]), *TINY, "--batch_size", "2", "--max_epochs", "2",
            "--checkpoint_every", "2", "--writing_params_path", str(out)]
    killed_after(2, argv, monkeypatch)
    resume = resume_path_for(out)
    with safe_open(str(resume), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()["factgpt"])
    edit(meta)
    save_file(tensors, str(resume), metadata={"factgpt": json.dumps(meta)})
    capsys.readouterr()
    one_clear_line(*run([*argv, "--resume"], capsys)[::2], "r.safetensors.resume")
