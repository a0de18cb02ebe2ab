"""Knowledge fast: the corruption's parameters, mixed pairs, the held-out split and the probe, and a
smoke run of the `fast`, `fast70`, `fast430` and `mixed` budgets."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from factgpt import stages
from factgpt.checkpoint import load_checkpoint
from factgpt.cli import main
from factgpt.config import REFERENCE, GPTConfig, TrainConfig
from factgpt.data import CharCorruptionDataset, Corruption, MixedDataset, NameDataset, Question, read_questions
from factgpt.errors import FactgptError
from factgpt.model import GPT
from factgpt.probe import ProbeItem, probe_items, run_probe, run_qa_probe, split_heldout
from factgpt.recipes import BUDGETS
from factgpt.report import budget_note, summarize, write_report
from factgpt.stages import knowledge_probe, mixed_pairs
from factgpt.table import Files, TableRun
from factgpt.train import Trainer

from conftest import PEOPLE, TINY, tiny_corpus, tiny_tsv


def _tiny_gpt(vocab_size: int) -> GPT:
    """A model small enough to memorise the tiny world in seconds (no dropout)."""
    return GPT(GPTConfig(vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=64,
                         embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0))


def _spans(corruption: Corruption, draws: int = 2000):
    ds = CharCorruptionDataset(tiny_corpus(), 128, corruption=corruption)
    idx = torch.zeros(draws, dtype=torch.long)  # document 0
    return ds.spans(idx, torch.rand(draws, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))


def test_reference_corruption_truncates_over_4_to_112():
    n, m, p = _spans(Corruption())
    doc0 = len(tiny_corpus().split("\n")[0])
    assert n.min() == 4 and n.max() == doc0  # the whole document once the draw passes its length
    assert (m >= 1).all() and (m <= torch.clamp(torch.round(n / 2) - 1, min=1)).all()


def test_min_truncation_keeps_the_start_of_every_document():
    n, m, p = _spans(Corruption(min_truncation=40))
    assert n.min() == 40 and (m <= torch.clamp(torch.round(n / 2) - 1, min=1)).all()
    n, m, _ = _spans(Corruption(min_truncation=20, max_truncation=20, mask_fraction=0.1))
    assert (n == 20).all() and (m == 1).all()  # round(20 * 0.1) - 1 = 1


def test_mixed_dataset_shows_documents_then_pairs():
    corpus = CharCorruptionDataset(tiny_corpus(), 64)
    names = NameDataset(corpus, tiny_tsv())
    mixed = MixedDataset(corpus, names)
    assert len(mixed) == len(corpus) + len(names)
    x, y = mixed.draw_batch(torch.tensor([len(corpus) + 2, 0]))
    assert x.shape == (2, corpus.seq_len)
    qx, qy = names[2]
    assert torch.equal(x[0, :len(qx)], qx) and torch.equal(y[0, :len(qy)], qy)
    assert (x[0, len(qx):] == 0).all()  # padded to the corpus's rows
    corpus.reseed(5)
    x_doc, _ = corpus.draw_batch(torch.tensor([0]))
    corpus.reseed(5)
    assert torch.equal(mixed.draw_batch(torch.tensor([len(corpus) + 1, 0]))[0][1], x_doc[0])  # the same draws


def test_mixed_pairs_leave_the_heldout_people_out(tiny_files):
    corpus = CharCorruptionDataset(tiny_corpus(), 128)
    mixed = mixed_pairs(corpus, tiny_files["train"])
    assert mixed.data == tiny_tsv(PEOPLE[:5]).splitlines()  # the 6th, held out, is never learnt
    schedule = knowledge_probe(corpus, tiny_files["train"], 1, ask=True)
    assert [q.question for q in schedule.questions] == [f"Where was {PEOPLE[5][0]} born?"]
    assert knowledge_probe(corpus, tiny_files["train"], 1).questions == []


def test_qa_probe_counts_correct_answers():
    text = tiny_corpus()
    corpus = CharCorruptionDataset(text, 128)
    names = NameDataset(corpus, tiny_tsv())
    model = _tiny_gpt(corpus.vocab_size)
    questions = [Question(f"Where was {n} born?", p, i + 1) for i, (n, p) in enumerate(PEOPLE)]
    assert run_qa_probe(model, corpus.vocab, questions) == 0.0  # an untrained model names no place
    tc = TrainConfig(max_epochs=200, batch_size=8, learning_rate=3e-3, final_tokens=10**9, weight_decay=0.0,
                     precision="fp32")
    Trainer(model, names, tc, progress=False).train()
    assert model.training and run_qa_probe(model, corpus.vocab, questions) == 1.0
    assert model.training  # the probe leaves the mode as it found it (decoding sets eval)
    assert run_qa_probe(model, corpus.vocab, []) == 0.0
    model.eval()
    assert run_qa_probe(model, corpus.vocab, questions) == 1.0 and not model.training


def test_heldout_split_is_the_last_lines():
    qs = [Question(f"q{i}", "a", i + 1) for i in range(2000)]
    train, heldout = split_heldout(qs)
    assert len(heldout) == 200 and heldout[0].line == 1801 and train + heldout == qs
    small = split_heldout(qs[:30])[1]
    assert len(small) == 3  # a tenth of a small file


def test_probe_items_stop_just_before_the_place(tiny_files):
    qs = read_questions(tiny_files["train"])
    items = probe_items(qs, tiny_corpus(), max_prefix=112)
    assert items[0] == ProbeItem("Ada Brook", "Ada Brook. Ada Brook was born in ", "Paris")
    assert len(probe_items(qs, tiny_corpus(), max_prefix=20)) == 0  # places past the block are left out
    assert probe_items([Question("Where was Nobody born?", "Paris", 1)], tiny_corpus(), max_prefix=112) == []


def test_probe_is_zero_before_training_and_finds_memorised_places():
    text = tiny_corpus()
    corpus = CharCorruptionDataset(text, 128, corruption=Corruption(min_truncation=112, mask_fraction=0.02))
    items = probe_items([Question(f"Where was {n} born?", p, 1) for n, p in PEOPLE], text, max_prefix=112)
    model = _tiny_gpt(corpus.vocab_size)
    assert run_probe(model, corpus.vocab, items) == 0.0  # an untrained model names no place
    # 150 epochs memorised 8 of 8 with 2 threads and 7 of 8 with 1 (other arithmetic): 300 memorise all
    tc = TrainConfig(max_epochs=300, batch_size=9, learning_rate=3e-3, final_tokens=10**9, weight_decay=0.0,
                     precision="fp32")
    Trainer(model, corpus, tc, progress=False).train()
    assert model.training and run_probe(model, corpus.vocab, items) == 1.0
    assert model.training  # the probe leaves the mode as it found it (decoding sets eval)
    model.eval()
    assert run_probe(model, corpus.vocab, items) == 1.0 and not model.training


@pytest.mark.parametrize("budget", ["fast", "fast70", "fast430", "mixed"])
def test_new_budgets_smoke(budget, tiny_files, tmp_path):
    b = BUDGETS[budget]
    recipe = replace(b, n_layer=1, n_head=2, n_embd=16,
                     pretrain=replace(b.pretrain, max_epochs=2, final_epochs=2, probe_every=1),
                     finetune=replace(b.finetune, max_epochs=1))
    run = TableRun(Files(tiny_files["corpus"], tiny_files["train"], tiny_files["dev"]), recipe, tmp_path,
                   progress=False)
    results = run.run(rows=("baseline", "vanilla_pretrain"))
    assert [r.key for r in results] == ["baseline", "vanilla_pretrain"]
    rec = run.records["vanilla_pretrain_seed0.pretrain"]
    assert [p["epoch"] for p in rec["probes"]] == [1, 2]
    mixed = budget == "mixed"
    assert all(("answered" in p) == mixed for p in rec["probes"])  # the question is asked where it was learnt
    assert rec["corruption"]["min_truncation"] == {"fast70": 64}.get(budget, 4)
    assert rec["train"]["weight_decay"] == {"fast70": 0.0}.get(budget, 0.1)
    assert rec["train"]["shuffle"]  # a new example order every epoch, in every one of these budgets
    assert ("--mix_pairs" in rec["command"]) == mixed
    n_docs = len(tiny_corpus().split("\n"))
    # 6 training pairs, of which the last is held out for the probe and never mixed in
    assert rec["examples"] == 2 * (n_docs + (5 if mixed else 0))
    # the cosine ends with the run, the mixed-in pairs counted: its floor comes after both epochs
    assert rec["train"]["final_tokens"] == 2 * (n_docs + (5 if mixed else 0)) * 128
    report = write_report(tmp_path, summarize(results), run.records, title="t",
                          budget_note=budget_note(recipe, 1, 2), published=None).read_text()
    assert "## When the facts arrive" in report and (tmp_path / "knowledge.png").is_file()
    assert ("| answered |" in report) == mixed
    assert ("--dropout 0.0 (reference 0.1)" in report) == (budget == "fast70")
    assert ("--min_truncation 64 (reference 4)" in report) == (budget == "fast70")
    assert "--shuffle" in report  # every one of these budgets shuffles


def test_fast430_is_the_reference_shuffled_with_one_cosine_over_430_epochs():
    r = BUDGETS["fast430"]
    assert replace(r, name="full", pretrain=replace(r.pretrain, shuffle=False, max_epochs=650, final_epochs=200,
                                                    probe_every=0)) == REFERENCE
    assert r.pretrain_config(2938, 0).final_tokens == 430 * 2938 * 128  # the H200 run cos430's


def test_fast_is_fast430_cut_to_380_epochs_with_its_cosine_and_frozen_finetuning():
    r = BUDGETS["fast"]
    assert replace(r, name="fast430", pretrain=replace(r.pretrain, max_epochs=430, final_epochs=430),
                   finetune=replace(r.finetune, frozen="")) == BUDGETS["fast430"]
    assert r.finetune_config(2938, True, 0).frozen == "mlp|emb"
    assert r.pretrain_config(2938, 0).final_tokens == 380 * 2938 * 128  # the floor comes with the last epoch


def test_pretrain_command_mixes_the_pairs_in_once(tiny_files, tmp_path, monkeypatch):
    """`factgpt pretrain --mix_pairs`: the pairs are built once, counted for the schedule and mixed
    into every epoch beside the documents; the held-out people's are left out (the probe asks them)."""
    seen = {}
    real = stages.pretrain

    def spy(*args, **kwargs):
        seen["tconf"], seen["pairs"] = args[2], kwargs["pairs"]
        return real(*args, **kwargs)

    monkeypatch.setattr(stages, "pretrain", spy)
    out = tmp_path / "mixed.safetensors"
    assert main(["pretrain", "vanilla", str(tiny_files["corpus"]), "--writing_params_path", str(out),
                 "--finetune_corpus_path", str(tiny_files["train"]), "--mix_pairs", "--probe_every", "1",
                 "--max_epochs", "2", "--threads", "1", *TINY]) == 0
    n_docs = len(tiny_corpus().split("\n"))
    assert len(seen["pairs"]) == 5  # 6 training pairs, the last held out
    assert seen["tconf"].final_tokens == 200 * (n_docs + 5) * 128  # the reference's 200 epochs' tokens, pairs counted
    progress = load_checkpoint(out).progress
    assert [p["epoch"] for p in progress["probes"]] == [1, 2]
    assert all("answered" in p for p in progress["probes"])
    assert progress["tokens"] == 2 * (n_docs + 5) * 128  # what the two epochs showed


def test_probe_every_n_epochs_and_after_the_last_kept_across_a_resume(tiny_files, tmp_path, capsys, monkeypatch):
    """--probe_every 2 over 3 epochs probes after epochs 2 and 3 (the last, whatever N); a run
    resumed from epoch 2's resume point keeps the probe it made before and ends with the same ones."""
    from factgpt.checkpoint import resume_path_for

    from conftest import killed_after
    common = ["pretrain", "vanilla", str(tiny_files["corpus"]), *TINY, "--batch_size", "3", "--max_epochs", "3",
              "--probe_every", "2", "--finetune_corpus_path", str(tiny_files["train"]), "--checkpoint_every", "1"]
    full = tmp_path / "full.safetensors"
    assert main([*common, "--writing_params_path", str(full)]) == 0
    probes = load_checkpoint(full).progress["probes"]
    assert [p["epoch"] for p in probes] == [2, 3]
    part = tmp_path / "part.safetensors"
    steps_per_epoch = -(-len(tiny_corpus().split("\n")) // 3)
    # inside epoch 3, after epoch 2's probe
    killed_after(2 * steps_per_epoch + 1, [*common, "--writing_params_path", part], monkeypatch)
    assert resume_path_for(part).exists()
    assert main([*common, "--resume", "--writing_params_path", str(part)]) == 0
    again = load_checkpoint(part).progress["probes"]
    assert [(p["epoch"], p["step"], p["known"]) for p in again] == [(p["epoch"], p["step"], p["known"]) for p in probes]


def test_save_every_writes_the_checkpoint_as_it_goes(tiny_files, tmp_path, capsys, monkeypatch):
    from conftest import killed_after
    out = tmp_path / "s.safetensors"
    steps_per_epoch = -(-len(tiny_corpus().split("\n")) // 3)
    killed_after(2 * steps_per_epoch + 1, ["pretrain", "vanilla", tiny_files["corpus"], *TINY, "--batch_size", "3",
                                           "--max_epochs", "4", "--save_every", "1", "--writing_params_path", out],
                 monkeypatch)  # inside epoch 3
    assert load_checkpoint(out).progress["epochs"] == 2  # the last whole epoch's model, loadable


@pytest.mark.parametrize("corruption, problem", [
    (Corruption(max_truncation=113), "max_truncation 113 is outside 1-112"),
    (Corruption(min_truncation=64, max_truncation=32), "min_truncation 64 is outside 1-32"),
    (Corruption(min_truncation=0), "min_truncation 0"),
    (Corruption(mask_fraction=1.5), "mask_fraction 1.5")])
def test_corruption_outside_the_block_is_refused_not_clamped(corruption, problem):
    with pytest.raises(FactgptError, match=problem):
        CharCorruptionDataset(tiny_corpus(), 128, corruption=corruption)
