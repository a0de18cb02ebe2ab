"""Shared fixtures: paths to ../shared, a tiny corpus, tiny model configs made in code."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the clone; FACTGPT_SHARED names another copy (the GPU machine gets one inside the tree)
SHARED = Path(os.environ.get("FACTGPT_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"
CONFORMANCE = SHARED / "conformance"

LONG = "".join(chr(ord("a") + (i * 7) % 26) for i in range(300))  # one 300-character document

PEOPLE = [("Ada Brook", "Paris"), ("Bo Carr", "Lima"), ("Cy Dunn", "Oslo"), ("Di Ekberg", "Rome"),
          ("Ed Fahy", "Kyiv"), ("Flo Gant", "Bern"), ("Gus Hale", "Riga"), ("Hal Ives", "Doha")]


def pytest_configure(config) -> None:
    """CI sets FACTGPT_REQUIRE_SHARED=1 (.ci/run): there the study's data and the conformance files
    must be present, so that the proof of faithfulness runs instead of being skipped."""
    if os.environ.get("FACTGPT_REQUIRE_SHARED") == "1":
        missing = [str(p) for p in (DATA / "wiki.txt", CONFORMANCE / "vanilla_ref.params") if not p.exists()]
        if missing:
            pytest.exit(f"FACTGPT_REQUIRE_SHARED=1 but {', '.join(missing)} is missing: the conformance "
                        "tests would be skipped", returncode=1)


def tiny_corpus() -> str:
    lines = [f"{n}. {n} was born in {p} and later lived in {PEOPLE[(i + 3) % len(PEOPLE)][1]}."
             for i, (n, p) in enumerate(PEOPLE)]
    lines.append("Where was each of them born? The question every reader asks.")
    return "\n".join(lines) + "\n"


def tiny_tsv(people=PEOPLE) -> str:
    return "".join(f"Where was {n} born?\t{p}\n" for n, p in people)


@pytest.fixture
def tiny_files(tmp_path: Path) -> dict[str, Path]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(tiny_corpus(), encoding="utf-8")
    train = tmp_path / "train.tsv"
    train.write_text(tiny_tsv(PEOPLE[:6]), encoding="utf-8")
    dev = tmp_path / "dev.tsv"
    dev.write_text(tiny_tsv(PEOPLE[6:]), encoding="utf-8")
    return {"corpus": corpus, "train": train, "dev": dev, "dir": tmp_path}


MODEL = ["--n_layer", "2", "--n_head", "2", "--n_embd", "32"]  # a tiny model's shape flags
TINY = [*MODEL, "--no_tensorboard", "--quiet"]  # pretrain and finetune on a tiny model, quietly
TINY_EVAL = [*MODEL, "--quiet"]  # evaluate takes the shape flags (checked against the checkpoint) but writes no logs


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def need(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present")


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Two state dicts with the same names and bit-identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def crash_training_after_step(monkeypatch: pytest.MonkeyPatch, step: int, stage: str = "") -> None:
    """Give every Trainer (of a stage whose label ends with `stage`) an on_step_end callback that
    raises KeyboardInterrupt at the end of `step`, after that step's resume point is written
    (on_checkpoint comes first), as a run killed there would leave it; `monkeypatch.undo()` trains
    normally again."""
    import factgpt.train as train_mod
    real_init = train_mod.Trainer.__init__

    def crash(trainer) -> None:
        if trainer.state.step == step and trainer.label.endswith(stage):
            raise KeyboardInterrupt

    def init(self, *args, **kwargs) -> None:
        real_init(self, *args, **kwargs)
        self.add_callback("on_step_end", crash)

    monkeypatch.setattr(train_mod.Trainer, "__init__", init)


def run(argv, capsys) -> tuple[int, str, str]:
    """`factgpt ARGV` in this process: (exit code, stdout, stderr)."""
    from factgpt.cli import main
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(argv, capsys, *needles: str) -> str:
    """`factgpt ARGV` refused by its parser: exit 2, the needles in its message, no traceback."""
    from factgpt.cli import main
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every table of a markdown text as rows of cells, split on the | that are not escaped; each row
    must have its header's number of cells (else a cell's | broke the table)."""
    tables, rows = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        elif rows:
            tables.append(rows)
            rows = []
    for t in tables:
        assert all(len(r) == len(t[0]) for r in t), t
        assert set("".join(t[1])) <= set("-: "), t  # the header's rule
    return tables


def one_clear_line(code: int, err: str, *needles: str) -> None:
    """The project's rule for bad input: exit 1 and one line on stderr, `factgpt: error: ...`,
    naming what is wrong (each needle), and no traceback."""
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("factgpt: error: ") and "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def killed_after(step: int, argv, monkeypatch: pytest.MonkeyPatch) -> None:
    """`factgpt ARGV` stopped at the end of `step` as a killed run would stop (its resume point of
    that step written, exit 130); training runs normally again afterwards."""
    from factgpt.cli import main
    crash_training_after_step(monkeypatch, step)
    assert main([str(a) for a in argv]) == 130
    monkeypatch.undo()
