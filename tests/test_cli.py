"""The command line: documented flags, the study's pipeline end to end, and bad input."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from factgpt.checkpoint import load_checkpoint
from factgpt.cli import build_parser, commands, main, parse
from factgpt.config import PERCEIVER_M

from conftest import DATA, TINY, TINY_EVAL, markdown_tables, need, one_clear_line, run, usage_error

# each study command's flags (README, "The study's commands"), and none of the others'
MODEL_FLAGS = ["--n_layer", "--n_head", "--n_embd", "--bottleneck_dim"]
TRAINING_FLAGS = ["--reading_params_path", "--writing_params_path", "--finetune_corpus_path", *MODEL_FLAGS,
                  "--dropout", "--max_epochs", "--batch_size", "--final_tokens", "--weight_decay", "--shuffle",
                  "--precision", "--seed", "--engine", "--kernels", "--device", "--threads", "--compile",
                  "--group_tokens", "--checkpoint_every", "--save_every", "--resume", "--restart", "--tb_dir",
                  "--tb_expt_name", "--no_tensorboard", "--quiet"]
FLAGS = {
    "pretrain": [*TRAINING_FLAGS, "--pretrain_lr", "--dropout_start_epoch", "--min_truncation", "--max_truncation",
                 "--mask_fraction", "--mix_pairs", "--probe_every"],
    "finetune": [*TRAINING_FLAGS, "--finetune_lr", "--finetune_frozen"],
    "evaluate": ["--reading_params_path", "--eval_corpus_path", "--outputs_path", *MODEL_FLAGS, "--engine",
                 "--device", "--threads", "--quiet"],
}


@pytest.mark.parametrize("command", ["pretrain", "finetune", "evaluate"])
def test_help_shows_the_documented_flags(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    listed = set(re.findall(r"--\w+", out)) - {"--help"}
    assert listed == set(FLAGS[command])  # each command lists its own flags and no other command's
    assert "{vanilla,perceiver}" in out


@pytest.mark.parametrize("command, flags", [
    ("reproduce", ["--data_dir", "--out", "--budget", "--seeds", "--checkpoint_every", "--rows", "--probe_every",
                   "--first_seed", "--device", "--group_tokens",
                   "{full,quick,fast,fast70,fast300,fast430,mixed,smoke}"]),
    ("demo", ["--out", "--seed", "--tiny", "--threads"]),
])
def test_help_of_the_table_commands(command, flags, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and all(f in out for f in flags), out


def test_the_engine_has_one_name(capsys):
    assert parse(["evaluate", "vanilla", "wiki.txt"]).engine == "fast"
    assert parse(["evaluate", "vanilla", "wiki.txt", "--engine", "reference"]).engine == "reference"
    usage_error(["pretrain", "vanilla", "wiki.txt", "--path", "reference"], capsys, "unrecognized arguments: --path")


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "factgpt", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "pretrain" in r.stdout and "london" in r.stdout


@need(DATA / "birth_dev.tsv")
def test_london_baseline_on_dev(capsys):
    assert main(["london", str(DATA / "birth_dev.tsv")]) == 0
    assert capsys.readouterr().out.strip() == "Correct: 25.0 out of 500.0: 5.0%"


@pytest.mark.parametrize("variant", ["vanilla", "perceiver"])
def test_pretrain_finetune_evaluate_end_to_end(tiny_files, variant, capsys, tmp_path):
    f = tiny_files
    common = [variant, f["corpus"], *TINY, "--bottleneck_dim", "8"]
    pre, fin = tmp_path / "pre.safetensors", tmp_path / "fin.safetensors"
    code, out, err = run(["pretrain", *common, "--writing_params_path", pre, "--max_epochs", "3",
                          "--batch_size", "4"], capsys)
    assert code == 0, err
    assert "pretrain: 3 epochs" in out and pre.exists()
    code, out, err = run(["finetune", *common, "--reading_params_path", pre, "--writing_params_path", fin,
                          "--finetune_corpus_path", f["train"], "--max_epochs", "2"], capsys)
    assert code == 0, err
    assert "finetune: 2 epochs" in out
    preds = tmp_path / "dev.predictions"
    shape = [variant, f["corpus"], *TINY_EVAL, "--bottleneck_dim", "8"]
    code, out, err = run(["evaluate", *shape, "--reading_params_path", fin, "--eval_corpus_path", f["dev"],
                          "--outputs_path", preds], capsys)
    assert code == 0, err
    assert out.startswith("Correct: ") and "out of 2.0" in out
    wrong = 2 - float(out.split()[1])
    assert ("a few mistakes:" in err) == (wrong > 0) and err.count("(gold ") == wrong, err  # minGPT's quick look
    assert len(preds.read_text(encoding="utf-8").splitlines()) == 2
    # unlabelled questions: predictions, and a plain word that there is no accuracy
    q = tmp_path / "q.tsv"
    q.write_text("Where was Ada Brook born?\n", encoding="utf-8")
    code, out, _ = run(["evaluate", *shape, "--reading_params_path", fin, "--eval_corpus_path", q,
                        "--outputs_path", preds], capsys)
    assert code == 0 and "has no answers" in out
    # finetuning with parts kept as pretrained; a pattern that matches nothing is refused, nothing written
    fin.unlink()
    finetune = ["finetune", *common, "--reading_params_path", pre, "--writing_params_path", fin,
                "--finetune_corpus_path", f["train"], "--max_epochs", "1"]
    one_clear_line(*run([*finetune, "--finetune_frozen", "mpl"], capsys)[::2], "matches no parameter")
    scratch = [a for a in finetune if a not in ("--reading_params_path", pre)]
    one_clear_line(*run([*scratch, "--finetune_frozen", "mlp"], capsys)[::2], "needs --reading_params_path")
    assert not fin.exists()
    code, out, err = run([*finetune, "--finetune_frozen", "mlp|emb"], capsys)
    assert code == 0 and load_checkpoint(fin).progress["frozen"] == "mlp|emb", err
    # finetuning runs at its own --dropout (the reference's 0.1 by default), not the checkpoint's
    fin2 = tmp_path / "fin2.safetensors"
    for reads, writes, given, p in ((pre, fin, ["--dropout", "0"], 0.0), (fin, fin2, [], 0.1)):
        code, _, err = run(["finetune", *common, "--reading_params_path", reads, "--writing_params_path", writes,
                            "--finetune_corpus_path", f["train"], "--max_epochs", "1", *given], capsys)
        c = load_checkpoint(writes).config
        assert code == 0 and c.embd_pdrop == c.resid_pdrop == c.attn_pdrop == p, err


def test_tensorboard_scalars_written(tiny_files, capsys, tmp_path):
    f = tiny_files
    tb = tmp_path / "tb"
    code, out, err = run(["pretrain", "vanilla", f["corpus"], "--n_layer", "1", "--n_head", "1", "--n_embd", "8",
                          "--quiet", "--max_epochs", "1", "--tb_dir", tb,
                          "--writing_params_path", tmp_path / "p.safetensors"], capsys)
    assert code == 0, err
    runs = list((tb / "pretrain").iterdir())
    # the reference run.py's name (m is the recipe's, PERCEIVER_M), then the model's size, the seed and
    # the start time, so that runs never append to one another's
    assert len(runs) == 1 and runs[0].name.startswith(f"run_vanilla_{PERCEIVER_M}_pt_lr_0.006000_ft_lr_0.000600_"
                                                      "L1_H1_E8_seed0_")
    code, _, err = run(["pretrain", "vanilla", f["corpus"], "--n_layer", "1", "--n_head", "1", "--n_embd", "8",
                        "--quiet", "--max_epochs", "1", "--tb_dir", tb,
                        "--writing_params_path", tmp_path / "p.safetensors"], capsys)
    assert code == 0 and len(list((tb / "pretrain").iterdir())) == 2, err  # a second run: a folder of its own
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs[0]))
    events.Reload()  # the file exists from the writer's start: what counts is the scalars in it
    steps = int(out.split(" steps,")[0].split()[-1])  # "pretrain: 1 epochs, N steps, ..."
    assert len(events.Scalars("train/loss")) == len(events.Scalars("train/lr")) == steps  # one a step


def test_bad_inputs_get_one_clear_line(tiny_files, capsys, tmp_path):
    f = tiny_files
    out = tmp_path / "x.safetensors"
    fin = ["finetune", "vanilla", f["corpus"], *TINY, "--writing_params_path", out, "--max_epochs", "1"]

    bad = tmp_path / "bad.tsv"
    bad.write_text("Where was Ada Brook born?\tParis\nWhere was Bo Carr born? Lima\n", encoding="utf-8")
    one_clear_line(*run([*fin, "--finetune_corpus_path", bad], capsys)[::2], "bad.tsv:2:", "no tab")

    bad.write_text("Where was Ada Brook born?\tParis\nWhere was Zoë born?\tLima\n", encoding="utf-8")
    one_clear_line(*run([*fin, "--finetune_corpus_path", bad], capsys)[::2], "bad.tsv:2:", "'Z'")

    bad.write_text("Where was Ada Brook born?\tParis\n\tLima\n", encoding="utf-8")
    one_clear_line(*run([*fin, "--finetune_corpus_path", bad], capsys)[::2], "bad.tsv:2:", "empty question")

    bad.write_bytes(b"Where was Ada Brook born?\tParis\n\xc3\x28\n")
    one_clear_line(*run([*fin, "--finetune_corpus_path", bad], capsys)[::2], "bad.tsv:2:", "UTF-8")

    bad.write_text("Where was " + "Ada Brook " * 13 + "born?\tParis\n", encoding="utf-8")
    one_clear_line(*run([*fin, "--finetune_corpus_path", bad], capsys)[::2], "bad.tsv:1:", "block size")

    one_clear_line(*run([*fin, "--finetune_corpus_path", tmp_path / "nope.tsv"], capsys)[::2],
                    "nope.tsv", "no such file")

    for device in ("gpu", "cuda:x"):  # torch.device would raise its own traceback at the first tensor
        one_clear_line(*run([*fin, "--finetune_corpus_path", f["train"], "--device", device], capsys)[::2],
                        f"--device {device}", "cpu, cuda, cuda:N or mps")

    # a refused run writes nothing, TensorBoard's folder included
    tb = tmp_path / "tb"
    fin_logged = [a for a in fin if a != "--no_tensorboard"]
    one_clear_line(*run([*fin_logged, "--tb_dir", tb, "--finetune_corpus_path", bad], capsys)[::2], "bad.tsv:1:")
    assert not tb.exists() and not out.exists()

    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    one_clear_line(*run(["pretrain", "vanilla", empty, *TINY, "--writing_params_path", out], capsys)[::2],
                    "empty.txt", "empty")
    assert not out.exists()  # nothing half-written


def test_wrong_checkpoint_is_refused(tiny_files, capsys, tmp_path):
    f = tiny_files
    pre = tmp_path / "perc.safetensors"
    code, _, err = run(["pretrain", "perceiver", f["corpus"], *TINY, "--bottleneck_dim", "8",
                        "--max_epochs", "1", "--writing_params_path", pre], capsys)
    assert code == 0, err
    ev = ["--reading_params_path", pre, "--eval_corpus_path", f["dev"], "--outputs_path", tmp_path / "o"]
    one_clear_line(*run(["evaluate", "vanilla", f["corpus"], *TINY_EVAL, *ev], capsys)[::2], "perceiver checkpoint")
    one_clear_line(*run(["evaluate", "perceiver", f["corpus"], *TINY_EVAL, "--bottleneck_dim", "16", *ev],
                         capsys)[::2], "bottleneck_dim 8")
    # a shape flag given must match the checkpoint (it used to be ignored); left out, it is the checkpoint's
    one_clear_line(*run(["evaluate", "perceiver", f["corpus"], *TINY_EVAL, "--n_layer", "3", *ev], capsys)[::2],
                    "has n_layer 2, not 3")
    code, _, err = run(["evaluate", "perceiver", f["corpus"], "--quiet", *ev], capsys)
    assert code == 0, err
    other = tmp_path / "other.txt"
    other.write_text(f["corpus"].read_text(encoding="utf-8") + "Q~\n", encoding="utf-8")
    one_clear_line(*run(["evaluate", "perceiver", other, *TINY_EVAL, "--bottleneck_dim", "8", *ev], capsys)[::2],
                    "vocabulary")
    junk = tmp_path / "junk.params"
    junk.write_bytes(pre.read_bytes()[:100])
    one_clear_line(*run(["evaluate", "perceiver", f["corpus"], *TINY_EVAL, "--bottleneck_dim", "8",
                          "--reading_params_path", junk, "--eval_corpus_path", f["dev"],
                          "--outputs_path", tmp_path / "o"], capsys)[::2], "corrupted")


def test_more_bad_inputs_get_one_clear_line(tiny_files, capsys, tmp_path):
    """The error paths a user meets first: a checkpoint that is not there, a question file that
    mixes labelled and unlabelled lines, a question too long to leave room for an answer, a row
    name reproduce does not know, a --tb_dir that is a file, and a reference .params file asked
    about without the corpus that gives its vocabulary."""
    f = tiny_files
    out = tmp_path / "p.safetensors"
    ev = ["evaluate", "vanilla", f["corpus"], *TINY_EVAL, "--outputs_path", tmp_path / "o"]
    one_clear_line(*run([*ev, "--reading_params_path", tmp_path / "nope.safetensors", "--eval_corpus_path",
                          f["dev"]], capsys)[::2], "nope.safetensors", "no such checkpoint")
    assert run(["pretrain", "vanilla", f["corpus"], *TINY, "--max_epochs", "1", "--writing_params_path", out],
               capsys)[0] == 0
    mixed = tmp_path / "mixed.tsv"
    mixed.write_text("Where was Bo Carr born?\nWhere was Ada Brook born?\tParis\n", encoding="utf-8")
    one_clear_line(*run([*ev, "--reading_params_path", out, "--eval_corpus_path", mixed], capsys)[::2],
                    "mixed.tsv:2:", "the first line has none")
    long = tmp_path / "long.tsv"
    long.write_text("Where was " + "Ada Brook " * 12 + "born?\tParis\n", encoding="utf-8")
    one_clear_line(*run([*ev, "--reading_params_path", out, "--eval_corpus_path", long], capsys)[::2],
                    "long.tsv:1:", "no room for an answer")
    one_clear_line(*run(["reproduce", "--data-dir", _data_dir(f), "--out", tmp_path / "r", "--rows", "nope"],
                         capsys)[::2], "no row named nope")
    (tmp_path / "tbfile").write_text("", encoding="utf-8")
    one_clear_line(*run(["pretrain", "vanilla", f["corpus"], "--n_layer", "1", "--n_head", "1", "--n_embd", "8",
                          "--quiet", "--max_epochs", "1", "--tb_dir", tmp_path / "tbfile",
                          "--writing_params_path", out], capsys)[::2], "cannot write TensorBoard logs")
    params = DATA.parent / "conformance" / "vanilla_ref.params"
    if not params.exists():
        return
    one_clear_line(*run(["ask", "--reading_params_path", params, "Where was Ada Brook born?"], capsys)[::2],
                    "carries no vocabulary")


def test_missing_required_flag(tiny_files, capsys):
    one_clear_line(*run(["pretrain", "vanilla", tiny_files["corpus"], *TINY], capsys)[::2],
                    "--writing_params_path")


def test_parser_has_every_command():
    choices = build_parser()._subparsers._group_actions[0].choices
    study = {"pretrain", "finetune", "evaluate", "london", "data", "reproduce", "demo"}
    lab = {"ask", "sample", "analyze", "attention-lab", "bench", "heldout"}  # through the entry point
    assert set(choices) == set(commands()) == study | lab


def test_demo_tiny_writes_the_table_and_report(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, err = run(["demo", "--tiny", "--quiet", "--out", out], capsys)
    assert code == 0, err
    assert "vanilla, pretrained + finetuned" in stdout and "perceiver, pretrained + finetuned" in stdout
    for name in ("report.md", "accuracy.png", "loss_curves.png", "stages.json", "corpus.txt", "train.tsv",
                 "heldout.tsv", "vanilla_pretrain_seed0.heldout.predictions"):
        assert (out / name).is_file(), name
    # a second run skips every finished stage
    code, _, err = run(["demo", "--tiny", "--quiet", "--out", out], capsys)
    assert code == 0 and err.count("done earlier, skipped") == 5, err
    # --seed seeds the training too, not only the world
    code, _, err = run(["demo", "--tiny", "--quiet", "--out", tmp_path / "s3", "--seed", "3"], capsys)
    assert code == 0 and (tmp_path / "s3" / "vanilla_pretrain_seed3.heldout.predictions").is_file(), err
    assert "recipe `demo-tiny`" in (out / "report.md").read_text()  # the report names what ran
    markdown_tables((out / "report.md").read_text(encoding="utf-8"))  # every table reads back
    # another recipe into this folder is refused before a file is written: the folder keeps its world
    world = {name: (out / name).read_bytes() for name in ("corpus.txt", "train.tsv", "heldout.tsv")}
    one_clear_line(*run(["demo", "--quiet", "--out", out], capsys)[::2], "another recipe", "demo-tiny")
    one_clear_line(*run(["demo", "--tiny", "--quiet", "--out", out, "--people", "24"], capsys)[::2],
                   "another world")
    assert world == {name: (out / name).read_bytes() for name in world}


def test_predictions_keep_one_line_per_question_whatever_the_model_writes(tmp_path):
    from factgpt.data import split_lines
    from factgpt.stages import write_predictions

    path = tmp_path / "p.predictions"
    write_predictions(path, ["Paris", "Lon\ndon", "a\r\nb", ""])
    lines = split_lines(path.read_text(encoding="utf-8"))
    assert lines == ["Paris", "Lon\u2424don", "a\u240d\u2424b", ""]  # one a question, the breaks shown


@pytest.mark.parametrize("argv", [["sample", "--reading_params_path", "x", "--prompt", "a", "--temperature", "0"],
                                  ["demo", "--threads", "-1"],
                                  ["finetune", "vanilla", "w.txt", "--batch_size", "0"],
                                  ["pretrain", "vanilla", "w.txt", "--max_epochs", "0"]])
def test_zero_is_not_taken_for_not_given(argv, capsys):
    usage_error(argv, capsys, "is not above 0")


@pytest.mark.parametrize("argv, says", [
    (["pretrain", "vanilla", "w.txt", "--n_head", "0"], "is not above 0"),  # once a ZeroDivisionError
    (["pretrain", "vanilla", "w.txt", "--pretrain_lr", "-1"], "is not above 0"),
    (["finetune", "vanilla", "w.txt", "--finetune_lr", "0"], "is not above 0"),
    (["pretrain", "vanilla", "w.txt", "--final_tokens", "0"], "is not above 0"),
    (["pretrain", "vanilla", "w.txt", "--group_tokens", "0"], "is not above 0"),
    (["pretrain", "vanilla", "w.txt", "--dropout", "1"], "is not in [0, 1)"),
    (["pretrain", "vanilla", "w.txt", "--dropout", "-0.1"], "is not in [0, 1)"),
    (["pretrain", "vanilla", "w.txt", "--weight_decay", "-0.1"], "is not 0 or more"),
    (["pretrain", "vanilla", "w.txt", "--probe_every", "-1"], "is not 0 or more"),  # once: every epoch
    (["pretrain", "vanilla", "w.txt", "--save_every", "-1"], "is not 0 or more"),
    (["demo", "--people", "0"], "is not between 4 and 10,000"),
    (["demo", "--people", "2"], "is not between 4 and 10,000"),  # once: an empty held-out file
    (["reproduce", "--seeds", "0"], "is not above 0"),  # once: every trained row silently dropped
    (["reproduce", "--checkpoint_every", "-5"], "is not 0 or more"),
    (["bench", "--steps", "0"], "is not above 0"),
    (["bench", "--decode-sample", "0"], "is not above 0"),  # either spelling
    (["ask", "--reading_params_path", "x", "--top_k", "0"], "is not above 0"),
    (["sample", "--reading_params_path", "x", "--prompt", "a", "--top_k", "0"], "is not above 0"),
])
def test_out_of_range_numbers_are_refused_by_the_parser(argv, says, capsys):
    usage_error(argv, capsys, says)


def test_a_folder_or_a_file_in_the_way_of_an_output_is_one_clear_line(tiny_files, capsys, tmp_path):
    f = tiny_files
    # a folder given as the checkpoint to write: refused before training, not when saving at the end
    one_clear_line(*run(["pretrain", "vanilla", f["corpus"], *TINY, "--writing_params_path", tmp_path],
                         capsys)[::2], "is a folder")
    blocker = tmp_path / "report.md"
    blocker.write_text("x", encoding="utf-8")
    one_clear_line(*run(["attention-lab", "--out", blocker], capsys)[::2], "a file is in the way")
    one_clear_line(*run(["reproduce", "--data-dir", _data_dir(f), "--out", blocker, "--budget", "smoke"],
                         capsys)[::2], "a file is in the way")
    assert blocker.read_text(encoding="utf-8") == "x"


def test_late_dropout_that_never_starts_is_refused(tiny_files, capsys, tmp_path):
    one_clear_line(*run(["pretrain", "vanilla", tiny_files["corpus"], *TINY, "--writing_params_path",
                          tmp_path / "p", "--max_epochs", "3", "--dropout_start_epoch", "3"], capsys)[::2],
                    "leaves none of the 3 epochs with dropout")


def test_pretrain_refuses_a_pairs_file_it_would_not_read(tiny_files, capsys, tmp_path):
    one_clear_line(*run(["pretrain", "vanilla", tiny_files["corpus"], *TINY, "--writing_params_path",
                          tmp_path / "p", "--finetune_corpus_path", tiny_files["train"]], capsys)[::2],
                    "only with --mix_pairs or --probe_every")
    one_clear_line(*run(["pretrain", "vanilla", tiny_files["corpus"], *TINY, "--writing_params_path",
                          tmp_path / "p", "--engine", "reference", "--group_tokens", "512"], capsys)[::2],
                    "has no use for them")
    assert not (tmp_path / "p").exists()


def test_training_refuses_the_evaluation_flags(tiny_files, capsys, tmp_path):
    # finetune writes no predictions: --outputs_path was once accepted and silently ignored
    usage_error(["finetune", "vanilla", tiny_files["corpus"], *TINY, "--writing_params_path", tmp_path / "f",
                 "--finetune_corpus_path", tiny_files["train"], "--outputs_path", tmp_path / "p"], capsys,
                "unrecognized arguments: --outputs_path")
    assert not (tmp_path / "f").exists()


def _data_dir(f):
    """The tiny files under the study's names, as `reproduce --data-dir` reads them."""
    d = f["dir"] / "data"
    d.mkdir(exist_ok=True)
    for name, key in (("wiki.txt", "corpus"), ("birth_places_train.tsv", "train"), ("birth_dev.tsv", "dev")):
        (d / name).write_text(f[key].read_text(encoding="utf-8"), encoding="utf-8")
    return d


def test_reproduce_refuses_a_row_named_twice(tiny_files, capsys, tmp_path):
    one_clear_line(*run(["reproduce", "--data-dir", _data_dir(tiny_files), "--out", tmp_path / "r", "--rows",
                          "baseline", "baseline"], capsys)[::2], "baseline more than once")
    assert not (tmp_path / "r").exists()


def test_probe_on_a_one_line_pairs_file_is_one_clear_line(tiny_files, capsys, tmp_path):
    one = tmp_path / "one.tsv"
    one.write_text(tiny_files["train"].read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    one_clear_line(*run(["pretrain", "vanilla", tiny_files["corpus"], *TINY, "--writing_params_path",
                          tmp_path / "p", "--probe_every", "1", "--finetune_corpus_path", one], capsys)[::2],
                    "one.tsv", "at least two")


def test_sample_refuses_an_empty_prompt_and_a_top_k_past_the_vocabulary(tiny_files, capsys, tmp_path):
    pre = tmp_path / "p.safetensors"
    code, _, err = run(["pretrain", "vanilla", tiny_files["corpus"], *TINY, "--max_epochs", "1",
                        "--writing_params_path", pre], capsys)
    assert code == 0, err
    one_clear_line(*run(["sample", "--reading_params_path", pre, "--prompt", ""], capsys)[::2], "--prompt is empty")
    one_clear_line(*run(["sample", "--reading_params_path", pre, "--prompt", "a", "--top_k", "100000"],
                        capsys)[::2], "vocabulary")


@need(DATA / "wiki.txt")
def test_reproduce_smoke_on_real_data_writes_every_file(tmp_path, capsys):
    out = tmp_path / "rep"
    code, stdout, err = run(["reproduce", "--budget", "smoke", "--quiet", "--data-dir", DATA, "--out", out], capsys)
    assert code == 0, err
    assert "23.8%" in stdout  # the published column
    for name in ("report.md", "accuracy.png", "loss_curves.png", "stages.json",
                 "vanilla_pretrain_seed0.birth_dev.predictions", "vanilla_pretrain_seed0.birth_test_inputs.predictions",
                 "perceiver_pretrain_seed0.birth_dev.predictions"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| vanilla_pretrain_seed0.pretrain |" in report and "factgpt pretrain vanilla" in report
    # always-London is the published baseline exactly; a 1-epoch smoke model is far below 23.8%
    assert "+0.0 points (within our interval)" in report and "Outside our 95% interval" in report
    assert "Budget `smoke`" in report
    assert "## What the models answer" in report and "'London', 500 of 500" in report
    assert len((out / "vanilla_pretrain_seed0.birth_dev.predictions").read_text().splitlines()) == 500
    markdown_tables(report)  # every table reads back, the commands' | included


def test_reproduce_without_data_says_how_to_get_it(tmp_path, capsys):
    one_clear_line(*run(["reproduce", "--data-dir", tmp_path, "--out", tmp_path / "o"], capsys)[::2],
                    "wiki.txt is missing", "factgpt data download")


def test_bench_rows_show_each_change(tiny_files):
    """`factgpt bench`'s table on tiny files: one row per change of the fast path, the perceiver,
    the decoding rows, and what an epoch costs."""
    from factgpt.lab.bench import FAST_VARIANTS, format_report, run_bench

    d = tiny_files["dir"]
    (d / "wiki.txt").write_text(tiny_files["corpus"].read_text())
    (d / "birth_places_train.tsv").write_text(tiny_files["train"].read_text())
    (d / "birth_dev.tsv").write_text(tiny_files["dev"].read_text())
    result = run_bench(d, steps=1, decode_sample=2, bottleneck_dim=8)
    rows, decode = result.rows, result.decode
    assert result.n_documents == len(tiny_files["corpus"].read_text().split("\n"))  # as the reference splits
    assert [r.path for r in rows[:6]] == ["reference fp32", *(v.label for v in FAST_VARIANTS)]
    assert rows[-1].path.startswith("perceiver m=8") and all(r.examples_per_s > 0 for r in rows)
    assert decode.sample_agrees and decode.n_questions == 2 and decode.perceiver_seconds > 0
    m = result.machine
    assert m.processor and m.threads == torch.get_num_threads() and min(m.matmul_gflops.values()) > 0
    # the model's FLOPs are the same for every path of a stage (useful work only), so MFU orders them as speed
    for stage in ("pretrain", "finetune"):
        counted = [r for r in rows if r.stage == stage and r.flops_per_s is not None]
        per_example = {round(r.flops_per_s / r.examples_per_s) for r in counted}
        assert len(counted) == 6 and len(per_example) == 1, per_example
        assert all(0 < result.mfu(r) < 1 for r in counted)
    assert rows[-1].flops_per_s is None and result.mfu(rows[-1]) is None  # the perceiver: not counted
    text = format_report(result)
    assert "+ rows grouped by length" in text and "x vanilla" in text and "One pretraining epoch" in text
    assert "GFLOP/s" in text and "MFU" in text and m.processor in text
    markdown_tables(text)


@pytest.mark.parametrize("command, flag", [("pretrain", ["--finetune_frozen", "mlp"]),
                                           ("finetune", ["--mix_pairs"]), ("finetune", ["--min_truncation", "64"]),
                                           ("finetune", ["--dropout_start_epoch", "2"]),
                                           ("evaluate", ["--dropout", "0"]), ("evaluate", ["--max_epochs", "3"]),
                                           ("evaluate", ["--seed", "0"]), ("evaluate", ["--tb_dir", "expt"])])
def test_a_flag_the_command_would_ignore_is_refused(command, flag, tiny_files, capsys, tmp_path):
    argv = [command, "vanilla", tiny_files["corpus"], *(TINY_EVAL if command == "evaluate" else TINY), *flag,
            "--reading_params_path", tmp_path / "x"]
    if command == "evaluate":
        argv += ["--eval_corpus_path", tiny_files["dev"], "--outputs_path", tmp_path / "y"]
    else:
        argv += ["--writing_params_path", tmp_path / "y", "--finetune_corpus_path", tiny_files["train"]]
    usage_error(argv, capsys, f"unrecognized arguments: {flag[0]}")
    assert not (tmp_path / "y").exists()


def test_one_convention_both_spellings_a_version_and_suggestions(capsys):
    assert parse(["reproduce", "--data-dir", "d", "--first-seed", "2"]).data_dir == "d"  # hyphens work too
    assert parse(["reproduce", "--data_dir", "d", "--first_seed", "2"]).first_seed == 2
    assert parse(["bench", "--decode-sample", "3"]).decode_sample == 3
    # flags and positionals in any order (ask's question after an option once gave the top-level usage)
    args = parse(["ask", "--reading_params_path", "c", "--pretrain_corpus_path", "w.txt", "Where was X born?"])
    assert (args.question, args.reading_params_path) == ("Where was X born?", "c")
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("factgpt ")
    usage_error(["pretrain", "vanilla", "w.txt", "--max_epoch", "3"], capsys, "did you mean --max_epochs?")
    usage_error(["evalute"], capsys, "no command 'evalute' (did you mean evaluate?)")
    usage_error(["ask", "--reading_params_path", "c", "--k", "3"], capsys, "unrecognized arguments: --k")
    # the same name for the same thing across commands
    for command in ("ask", "sample", "analyze", "bench", "heldout", "evaluate", "finetune", "pretrain"):
        assert "--reading_params_path" in build_parser()._subparsers._group_actions[0].choices[command].format_help()


def test_model_flops_count_useful_work_only():
    from factgpt.config import GPTConfig
    from factgpt.lab.bench import model_flops

    c = GPTConfig(vocab_size=10, block_size=8, n_layer=2, n_head=2, n_embd=16)
    matmul = 2 * 12 * 16 * 16 + 16 * 10  # q, k, v, proj and the MLP per block; the head
    assert model_flops(c, [3]) == 6 * matmul * 3 + 12 * 16 * 2 * (1 + 2 + 3)  # 6 causal pairs
    assert model_flops(c, [3, 1]) == model_flops(c, [3]) + model_flops(c, [1])  # examples add up
