"""The table runner: an interrupted training stage resumes from its last resume point; the
report's comparison with the published figures and its answer spread."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from factgpt.checkpoint import load_checkpoint, resume_path_for
from factgpt.cli import parse
from factgpt.config import REFERENCE, Finetuning, Pretraining, Recipe
from factgpt.knobs import recipe_of, train_config_of
from factgpt.recipes import BUDGETS, DEMO
from factgpt.report import (
    ROWS,
    RowResult,
    RowSummary,
    budget_note,
    compare,
    demo_note,
    format_table,
    spread,
    summarize,
    wilson,
)
from factgpt.table import Files, TableRun, row_stages, same_recipe

from conftest import DATA, ROOT, crash_training_after_step, need, run, same_tensors

RECIPE = Recipe("test", n_layer=1, n_head=2, n_embd=16, dropout=0.1, bottleneck_dim=8,
                pretrain=Pretraining(max_epochs=3, batch_size=2, final_epochs=3),
                finetune=Finetuning(max_epochs=1, batch_size=4))


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


def test_a_row_interrupted_in_finetuning_skips_its_finished_pretraining(tiny_files, tmp_path, monkeypatch):
    """The row's pretraining finished before the interrupt: the rerun must not train it again (a
    table interrupted in finetuning would otherwise retrain hours of pretraining unseen)."""
    import hashlib

    files = Files(tiny_files["corpus"], tiny_files["train"], tiny_files["dev"])
    crash_training_after_step(monkeypatch, 1, stage=".finetune")
    with pytest.raises(KeyboardInterrupt):
        _run(files, tmp_path)
    monkeypatch.undo()
    pretrained = tmp_path / "vanilla_pretrain_seed0.pretrain.safetensors"
    assert pretrained.exists() and not (tmp_path / "vanilla_pretrain_seed0.finetune.safetensors").exists()
    before = hashlib.sha256(pretrained.read_bytes()).hexdigest()
    said = []
    _run(files, tmp_path, log=said.append)
    assert "vanilla_pretrain_seed0.pretrain: done earlier, skipped" in said, said
    assert not any(s.startswith("vanilla_pretrain_seed0.pretrain: ") and "epochs" in s for s in said), said
    assert hashlib.sha256(pretrained.read_bytes()).hexdigest() == before  # the checkpoint as it was


def test_first_seed_and_layout_reach_the_stages(tiny_files, tmp_path):
    """--first_seed 1 runs seed 1 alone; a layout (here group_tokens) reaches each stage's config."""
    files = Files(tiny_files["corpus"], tiny_files["train"], tiny_files["dev"])
    run = TableRun(files, RECIPE, tmp_path, progress=False, layout={"group_tokens": 64})
    run.run(rows=("vanilla_pretrain",), first_seed=1)
    assert sorted(run.records) == [f"vanilla_pretrain_seed1.{s}" for s in ("evaluate", "finetune", "pretrain")]
    assert run.records["vanilla_pretrain_seed1.pretrain"]["train"]["group_tokens"] == 64
    assert run.records["vanilla_pretrain_seed1.pretrain"]["train"]["layout"] == "grouped"  # not packed
    with pytest.raises(ValueError, match="layout takes"):
        TableRun(files, RECIPE, tmp_path / "other", progress=False, layout={"learning_rate": 1.0})


def _row(correct: int, total: int = 500) -> RowSummary:
    return summarize([RowResult("vanilla_pretrain", 0, correct, total, 0.0)])[0]


@pytest.mark.parametrize("perceiver, says", [(6, "the perceiver's overlapping, with a higher estimate than it"),
                                             (1, "the perceiver's not above it"),
                                             (20, "the perceiver's apart from and above it")])
def test_demo_note_reads_the_intervals_not_only_the_estimates(perceiver, says):
    rows = summarize([RowResult("baseline", 0, 6, 100, 0.0), RowResult("vanilla_nopretrain", 0, 4, 100, 0.0),
                      RowResult("vanilla_pretrain", 0, 63, 100, 0.0), RowResult("perceiver_pretrain", 0, perceiver,
                                                                                100, 0.0)])
    note = demo_note(rows, "demo", 0)
    assert "vanilla's apart from and above no pretraining's" in note and says in note, note
    assert note.count(". ") == 1  # two sentences


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


def test_summary_is_one_line_per_row_over_its_seeds():
    rows = summarize([RowResult("baseline", 0, 25, 500, 0.0), RowResult("vanilla_pretrain", 0, 100, 500, 1.0),
                      RowResult("vanilla_pretrain", 1, 110, 500, 1.0)])
    assert [(r.key, r.seeds) for r in rows] == [("baseline", 1), ("vanilla_pretrain", 2)]
    v = rows[1]
    assert v.mean == pytest.approx(21.0) and v.percents == [20.0, 22.0] and v.sd == pytest.approx(2 ** 0.5)
    assert (v.correct, v.total) == (100, 500)  # the first seed's (its answers are the ones listed)
    assert v.interval == (wilson(100, 500)[0], wilson(110, 500)[1])  # the seeds' intervals together
    assert "21.0% ± 1.4 (2 seeds: 20.0%, 22.0%)" in format_table(rows)


@pytest.mark.parametrize("recipe", [*BUDGETS.values(), DEMO,
                                    replace(REFERENCE, name="frozen", finetune=Finetuning(frozen="mlp|emb")),
                                    replace(REFERENCE, name="late", pretrain=Pretraining(dropout_start_epoch=100))],
                         ids=lambda r: r.name)
def test_each_stage_command_line_parses_back_into_its_configs(recipe, tmp_path):
    """The report's commands cannot drift from the parser: `factgpt ARGV` builds each stage's
    TrainConfig and GPTConfig exactly."""
    files = Files(tmp_path / "wiki.txt", tmp_path / "train.tsv", tmp_path / "dev.tsv")
    n_docs, vocab = 2938, 256
    n_mixed = 1800 if recipe.pretrain.mix_pairs else 0  # pairs mixed into each pretraining epoch
    for key in ROWS[1:]:
        for seed in (0, 1):
            for stage in row_stages(key, seed, recipe, files, n_docs, vocab, n_mixed):
                args = parse(stage.argv())  # a flag its command does not take would be refused
                assert (args.command, args.variant, args.pretrain_corpus_path) == (
                    stage.command, stage.variant, str(files.corpus))
                assert args.reading_params_path == stage.reads
                cli_recipe = recipe_of(args)
                if stage.command == "evaluate":
                    assert (args.eval_corpus_path, args.outputs_path) == (str(files.eval), stage.outputs)
                    assert args.bottleneck_dim == stage.model_config().bottleneck_dim
                    continue
                assert args.writing_params_path == stage.writes
                assert train_config_of(args, cli_recipe, n_docs, n_mixed_pairs=n_mixed) == stage.train_config(), \
                    stage.key
                assert cli_recipe.model_config(vocab, stage.perceiver) == stage.model_config(), stage.key
                if stage.command == "pretrain":
                    assert cli_recipe.pretrain.corruption == recipe.pretrain.corruption
                    assert (cli_recipe.pretrain.mix_pairs, cli_recipe.pretrain.probe_every) == (
                        recipe.pretrain.mix_pairs, recipe.pretrain.probe_every)
                if stage.command == "finetune" or recipe.pretrain.mix_pairs or recipe.pretrain.probe_every:
                    assert args.finetune_corpus_path == str(files.train)


def test_report_regenerates_from_records_and_predictions_alone(tiny_files, tmp_path):
    """With every checkpoint deleted, a rerun trains nothing: it reads the records and predictions."""
    files = Files(tiny_files["corpus"], tiny_files["train"], tiny_files["dev"])
    first = _run(files, tmp_path / "r")
    for ckpt in (tmp_path / "r").glob("*.safetensors"):
        ckpt.unlink()
    said = []
    again = TableRun(files, RECIPE, tmp_path / "r", progress=False, log=said.append)
    (row,) = again.run(rows=("vanilla_pretrain",))
    assert not any("epochs" in s for s in said), said  # no stage trained
    rec = first.records["vanilla_pretrain_seed0.evaluate"]
    assert (row.correct, row.total) == (rec["correct"], rec["total"])
    # the record names the CPU's vector unit: the same recipe runs ~3x slower on AVX2 than AVX512-BF16
    assert torch.backends.cpu.get_cpu_capability() in rec["machine"], rec["machine"]
    assert not list((tmp_path / "r").glob("*.safetensors"))


def test_another_recipe_is_refused_even_without_checkpoints(tiny_files, tmp_path):
    """Deleting the checkpoints and rerunning with another recipe into the same folder must not
    train the new recipe and then read back the old recipe's evaluation as its result."""
    from factgpt.errors import FactgptError

    files = Files(tiny_files["corpus"], tiny_files["train"], tiny_files["dev"])
    _run(files, tmp_path / "r")
    for ckpt in (tmp_path / "r").glob("*.safetensors"):
        ckpt.unlink()
    shorter = replace(RECIPE, pretrain=replace(RECIPE.pretrain, max_epochs=2, final_epochs=2))
    other = TableRun(files, shorter, tmp_path / "r", progress=False)
    with pytest.raises(FactgptError, match="another recipe"):
        other.run(rows=("vanilla_pretrain",))
    assert not list((tmp_path / "r").glob("*.safetensors"))  # refused before training anything


def test_damaged_records_and_an_unlabelled_question_file_are_one_clear_error(tiny_files, tmp_path):
    from factgpt.errors import FactgptError

    files = Files(tiny_files["corpus"], tiny_files["train"], tiny_files["dev"])
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "stages.json").write_text('{"vanilla_pretrain_seed0.pretrain": ', encoding="utf-8")
    with pytest.raises(FactgptError, match="stages.json: the stage records are not JSON"):
        TableRun(files, RECIPE, tmp_path / "r", progress=False)
    unlabelled = tmp_path / "q.tsv"
    unlabelled.write_text("Where was Ada Brook born?\n", encoding="utf-8")
    with pytest.raises(FactgptError, match="q.tsv:1: line has no tab"):
        TableRun(Files(tiny_files["corpus"], tiny_files["train"], unlabelled), RECIPE, tmp_path / "s", progress=False)


def test_a_stage_trained_anew_is_evaluated_anew(tiny_files, tmp_path):
    """A row whose pretraining must run again (its record and checkpoint gone) is evaluated again,
    not read back from an evaluation record of the model that went before."""
    import json

    files = Files(tiny_files["corpus"], tiny_files["train"], tiny_files["dev"])
    first = _run(files, tmp_path / "r")
    records = dict(first.records)
    del records["vanilla_pretrain_seed0.pretrain"]
    records["vanilla_pretrain_seed0.evaluate"] = {"correct": -1, "total": -1}  # stale: must not be read back
    (tmp_path / "r" / "stages.json").write_text(json.dumps(records))
    (tmp_path / "r" / "vanilla_pretrain_seed0.pretrain.safetensors").unlink()
    said = []
    (row,) = TableRun(files, RECIPE, tmp_path / "r", progress=False, log=said.append).run(rows=("vanilla_pretrain",))
    assert any(s.startswith("vanilla_pretrain_seed0.pretrain: 3 epochs") for s in said), said
    assert row.total == first.records["vanilla_pretrain_seed0.evaluate"]["total"] and row.correct >= 0


def test_a_rerun_keeps_the_baseline_record_it_finds(tiny_files, tmp_path):
    """Regenerating a report must not restamp the baseline with today's commit and machine."""
    files = Files(tiny_files["corpus"], tiny_files["train"], tiny_files["dev"])
    first = TableRun(files, RECIPE, tmp_path / "r", progress=False)
    first.run(rows=("baseline",))
    assert first.records["baseline"]["answer"] == "Paris"
    first.records["baseline"]["commit"] = "as run"
    (tmp_path / "r" / "stages.json").write_text(__import__("json").dumps(first.records), encoding="utf-8")
    again = TableRun(files, RECIPE, tmp_path / "r", progress=False)
    (row,) = again.run(rows=("baseline",))
    assert again.records["baseline"]["commit"] == "as run" and row.total == 2


def test_reproduce_probe_flag_sets_the_budgets_probe_only():
    from dataclasses import replace

    from factgpt.recipes import BUDGETS, with_budget

    assert with_budget("full", probe_every=None) == BUDGETS["full"]
    assert with_budget("full", probe_every=25) == replace(BUDGETS["full"],
                                                           pretrain=replace(BUDGETS["full"].pretrain, probe_every=25))


def test_recorded_stages_are_matched_on_what_finetuning_freezes():
    """A finished stage is reused only for the same recipe: another `frozen` is another run, and a
    record written before the setting existed counts as freezing nothing."""
    from dataclasses import asdict

    from factgpt.config import GPTConfig, json_roundtrip

    model = GPTConfig(vocab_size=10).identity()
    tconf = replace(REFERENCE, finetune=Finetuning(frozen="mlp|emb")).finetune_config(2938, True, 0)
    record = {"model": json_roundtrip(model), "train": json_roundtrip(asdict(tconf))}
    assert same_recipe(record, model, tconf)
    assert not same_recipe(record, model, replace(tconf, frozen=""))
    old = {"model": record["model"], "train": {k: v for k, v in record["train"].items() if k != "frozen"}}
    assert same_recipe(old, model, replace(tconf, frozen="")) and not same_recipe(old, model, tconf)
    assert "(the parameters matching /mlp|emb/ kept as pretrained) and 75 without" in budget_note(
        replace(REFERENCE, finetune=Finetuning(frozen="mlp|emb")), 1, 500)
    assert "kept as pretrained" not in budget_note(REFERENCE, 1, 500)


@need(DATA / "wiki.txt")
@pytest.mark.parametrize("record, argv, skipped, says", [
    ("2026-11-28_fast", ["--budget", "fast", "--rows", "baseline", "vanilla_pretrain", "--seeds", "2"], 4,
     "10.7% ± 4.9 (2 seeds: 14.2%, 7.2%)"),
    ("2026-11-28_full", ["--budget", "full", "--probe_every", "25"], 5, "27.6% (138/500)"),
])
def test_reproduce_over_a_record_finds_its_finished_stages(record, argv, skipped, says, tmp_path, capsys):
    """A record made by an earlier version of the code still reads back: every stage is found
    finished and skipped, nothing trains, and the table is the record's."""
    import shutil

    out = tmp_path / record
    shutil.copytree(ROOT / "records" / record, out)
    code, stdout, err = run(["reproduce", "--data_dir", DATA, "--out", out, "--quiet", *argv], capsys)
    assert code == 0, err
    assert err.count("done earlier, skipped") == skipped and " epochs" not in err, err
    assert says in stdout and not list(out.glob("*.safetensors"))
