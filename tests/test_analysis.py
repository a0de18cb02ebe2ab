"""analyze: every category on a small fixture; ask and sample through the CLI."""

from __future__ import annotations

from factgpt.cli import main
from factgpt.data import Question
from factgpt.lab.answers import analyze, answer_probability, rank_answers, trigrams

from conftest import TINY, markdown_tables, one_clear_line, run

CORPUS = "\n".join([
    "Ann Lee. Ann Lee was born in Paris and worked in Rome.",
    "Bob Stone. Bob Stone was born in Oslo; he died in Lima.",
    "Bobby Stones. Bobby Stones was born in Cairo.",
    "Cy Dunn. Cy Dunn lived in Bern.",
    "Dan Raye. Dan Raye sang in Doha.",
]) + "\n"
FINETUNE = [Question("Where was Dan Ray born?", "Riga", 1), Question("Where was Eve Fox born?", "London", 2),
            Question("Where was Fay Gil born?", "London", 3)]


def q(name, gold, line=1):
    return Question(f"Where was {name} born?", gold, line)


def test_every_category():
    questions = [q("Ann Lee", "Paris"), q("Zed Nobody", "Kyiv"), q("Bob Stone", "Oslo"), q("Bob Stone", "Oslo"),
                 q("Dan Raye", "Doha"), q("Cy Dunn", "Bern"), q("Ann Lee", "Paris")]
    preds = ["Paris", "Kyoto", "Lima", "Cairo", "Riga", "London", "Nowhere"]
    a = analyze(questions, preds, CORPUS, FINETUNE, k_prior=1)
    cats = [r.category for r in a.rows]
    assert cats == ["correct", "no_document", "in_own_document", "similar_name", "similar_name", "prior", "other"]
    assert a.rows[3].similar_person == "Bobby Stones"  # the most similar name, from the corpus
    assert a.rows[4].similar_person == "Dan Ray"  # from the finetuning set
    assert a.counts == {"correct": 1, "no_document": 1, "in_own_document": 1, "similar_name": 2, "prior": 1,
                        "other": 1}
    assert a.n_wrong == 6 and a.similar_rate == 2 / 6 and 0 <= a.chance_rate < a.similar_rate


def test_calibration_buckets():
    questions = [q("Ann Lee", "Paris"), q("Bob Stone", "Oslo")]
    a = analyze(questions, ["Paris", "Rome"], CORPUS, confidences=[0.9, 0.1])
    by = {b.bucket: b for b in a.calibration}
    assert by["0.8-1.0"].n == 1 and by["0.8-1.0"].accuracy == 1.0
    assert by["0.0-0.2"].accuracy == 0.0


def test_trigrams_are_case_blind():
    assert trigrams("Ann") == trigrams("ANN")


def _trained(tiny_files, tmp_path, capsys):
    f = tiny_files
    out = tmp_path / "m.safetensors"
    assert main(["finetune", "vanilla", str(f["corpus"]), *TINY, "--finetune_corpus_path", str(f["train"]),
                 "--max_epochs", "30", "--batch_size", "2", "--writing_params_path", str(out)]) == 0
    capsys.readouterr()
    return out


def test_ask_sample_and_ranking(tiny_files, tmp_path, capsys, monkeypatch):
    import io

    from factgpt.stages import load_for_inference
    params = _trained(tiny_files, tmp_path, capsys)
    sample = ["--reading_params_path", str(params)]
    assert main(["ask", "--reading_params_path", str(params), "Where was Ada Brook born?", "--top_k", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("greedy: ") and "probability" in out[0]
    ranked = [ln for ln in out[2:] if "%" in ln]
    assert 1 <= len(ranked) <= 3
    probs = [float(ln.split("%")[0]) for ln in ranked]
    assert probs == sorted(probs, reverse=True)
    model, vocab = load_for_inference(params)
    top = rank_answers(model, vocab, "Where was Ada Brook born?", k=3)
    for r in top:  # the beam's probabilities are the model's own
        assert abs(r.probability - answer_probability(model, vocab, "Where was Ada Brook born?", r.answer)) < 1e-4
    # a character outside the vocabulary: one clear line
    assert main(["ask", "--reading_params_path", str(params), "Where was Ωmega born?"]) == 1
    assert "'Ω'" in capsys.readouterr().err
    # interactive: questions from stdin, a bad one does not end the session
    monkeypatch.setattr("sys.stdin", io.StringIO("Where was Ωmega born?\nWhere was Bo Carr born?\n\n"))
    assert main(["ask", "--reading_params_path", str(params)]) == 0
    captured = capsys.readouterr()
    assert "'Ω'" in captured.err and captured.out.count("greedy: ") == 1
    # sample: greedy continuation, and a filled span
    assert main(["sample", *sample, "--prompt", "Ada Brook was born in", "--steps", "5"]) == 0
    assert capsys.readouterr().out.startswith("Ada Brook was born in")
    assert main(["sample", *sample, "--prompt", "Ada Brook was ⁇ in Paris⁇", "--steps", "8"]) == 0
    assert "filled span" in capsys.readouterr().err
    assert main(["sample", *sample, "--prompt", "Ada", "--steps", "5", "--temperature", "0.8",
                 "--top_k", "3", "--seed", "1"]) == 0
    first = capsys.readouterr().out
    assert main(["sample", *sample, "--prompt", "Ada", "--steps", "5", "--temperature", "0.8",
                 "--top_k", "3", "--seed", "1"]) == 0
    assert capsys.readouterr().out == first  # seeded
    sampled = []
    for seed in ("1", "2"):  # and the seed is used: hot sampling over 20 steps differs between two seeds
        assert main(["sample", *sample, "--prompt", "Ada", "--steps", "20", "--temperature", "2",
                     "--seed", seed]) == 0
        sampled.append(capsys.readouterr().out)
    assert sampled[0] != sampled[1]
    assert main(["sample", *sample, "--prompt", "Ada", "--steps", "5"]) == 0
    greedy = capsys.readouterr().out
    assert main(["sample", *sample, "--prompt", "Ada", "--steps", "5", "--temperature", "0.8", "--top_k", "1",
                 "--seed", "3"]) == 0
    assert capsys.readouterr().out == greedy  # top 1 of any temperature is the greedy choice


def test_analyze_cli_writes_outputs(tiny_files, tmp_path, capsys):
    f = tiny_files
    params = _trained(tiny_files, tmp_path, capsys)
    preds = tmp_path / "p.txt"
    preds.write_text("Paris\nLima\n", encoding="utf-8")
    out = tmp_path / "an"
    assert main(["analyze", "--predictions_path", str(preds), "--eval_corpus_path", str(f["dev"]),
                 "--pretrain_corpus_path", str(f["corpus"]), "--finetune_corpus_path", str(f["train"]),
                 "--reading_params_path", str(params), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| correct |" in text and "Calibration" in text and "chance baseline" in text
    assert "not computed" not in text  # every input given: everything computed
    markdown_tables(text)
    for name in ("summary.md", "categories.tsv", "categories.png"):
        assert (out / name).is_file()
    # without the finetuning pairs and the checkpoint: what cannot be computed says so, nothing is written
    code, stdout, err = run(["analyze", "--predictions_path", preds, "--eval_corpus_path", f["dev"],
                             "--pretrain_corpus_path", f["corpus"]], capsys)
    assert code == 0 and "| prior | - | - |" in stdout and "prior: not computed" in stdout, stdout
    assert "calibration: not computed" in stdout and "(no --out: nothing written)" in err
    markdown_tables(stdout)
    preds.write_text("Paris\n", encoding="utf-8")
    assert main(["analyze", "--predictions_path", str(preds), "--eval_corpus_path", str(f["dev"]),
                 "--pretrain_corpus_path", str(f["corpus"])]) == 1
    assert "1 predictions for 2 questions" in capsys.readouterr().err
    preds.write_text("Paris\nZürich\n", encoding="utf-8")  # a character the model's vocabulary lacks
    one_clear_line(*run(["analyze", "--predictions_path", preds, "--eval_corpus_path", f["dev"],
                         "--pretrain_corpus_path", f["corpus"], "--reading_params_path", params], capsys)[::2],
                   "p.txt:2:")
