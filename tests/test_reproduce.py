"""The table runner: an interrupted training stage resumes from its last resume point; the
report's comparison with the published figures and its answer spread."""

from __future__ import annotations

import pytest

from factgpt.checkpoint import load_checkpoint, resume_path_for
from factgpt.reproduce import Files, Recipe, TableRun, compare, spread, wilson

from conftest import crash_training_after_step, same_tensors

RECIPE = Recipe("test", n_layer=1, n_head=2, n_embd=16, dropout=0.1, bottleneck_dim=8, pretrain_epochs=3,
                pretrain_batch=2, pretrain_final_epochs=3, finetune_epochs=1, finetune_batch=4)


def _run(files, out, **kw) -> TableRun:
    run = TableRun(files, RECIPE, out, progress=False, checkpoint_every=2, **kw)
    run.run(rows=("vanilla_pretrain",))
    return run


def test_interrupted_stage_resumes_from_its_resume_point(tiny_files, tmp_path, monkeypatch):
    files = Files(tiny_files["corpus"], tiny_files["train"], tiny_files["dev"])
    _run(files, tmp_path / "whole")

    crash_training_after_step(monkeypatch, 4)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        _run(files, part)
    stage = part / "vanilla_pretrain_seed0.pretrain.safetensors"
    assert resume_path_for(stage).exists() and not stage.exists()

    monkeypatch.undo()
    said = []
    run = _run(files, part, log=said.append)
    assert any("resuming" in s for s in said), said
    assert run.records["vanilla_pretrain_seed0.pretrain"]["resumed_from_step"] == 4
    assert not resume_path_for(stage).exists()
    for name in ("vanilla_pretrain_seed0.pretrain", "vanilla_pretrain_seed0.finetune"):
        assert same_tensors(load_checkpoint(tmp_path / "whole" / f"{name}.safetensors").state_dict,
                            load_checkpoint(part / f"{name}.safetensors").state_dict), name
    whole = (tmp_path / "whole" / "vanilla_pretrain_seed0.dev.predictions").read_text()
    assert (part / "vanilla_pretrain_seed0.dev.predictions").read_text() == whole


def _row(correct: int, total: int = 500) -> dict:
    return {"mean": 100 * correct / total, "interval": wilson(correct, total)}


def test_wilson_interval_matches_the_textbook_figure():
    lo, hi = wilson(119, 500)  # the published 23.8%: about +/-3.7 points
    assert lo == pytest.approx(20.3, abs=0.05) and hi == pytest.approx(27.7, abs=0.05)
    assert wilson(0, 500)[0] == 0.0 and wilson(500, 500)[1] == pytest.approx(100.0)


@pytest.mark.parametrize("ours, verdict", [(119, "+0.0 points (within"), (105, "-2.8 points (within"),
                                           (7, "-22.4 points (OUTSIDE"), (150, "+6.2 points (OUTSIDE")])
def test_compare_says_whether_the_published_figure_is_inside_our_interval(ours, verdict):
    assert compare(_row(ours), (119, 500)).startswith(verdict)


def test_spread_tells_prior_guessing_from_varied_answers():
    golds = ["Paris", "Rome", "Lima", "Oslo", "Bern", "Riga", "Kyiv"]
    prior = spread(["Paris"] * 7, golds)  # one answer for everyone: right once, by the prior
    assert (prior.distinct, prior.top, prior.top_count, prior.correct_in_top5) == (1, "Paris", 7, 1)
    varied = spread(["Paris", "Rome", "Lima", "Oslo", "Bern", "Riga", "Doha"], golds)
    assert varied.distinct == 7 and varied.top_count == 1
    assert varied.correct_in_top5 == 5  # ties: most_common keeps first-seen order, so the first five count
