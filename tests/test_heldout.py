"""`factgpt heldout`: finetune a pretrained checkpoint on the training pairs but the held-out people,
then ask those people (never dev)."""

from __future__ import annotations

from factgpt.lab.heldout import Setting, heldout_qa, settings

from conftest import TINY, one_clear_line, run


def _pretrained(f, tmp_path, capsys):
    pre = tmp_path / "pre.safetensors"
    code, _, err = run(["pretrain", "vanilla", f["corpus"], *TINY, "--max_epochs", "2", "--batch_size", "2",
                        "--writing_params_path", pre], capsys)
    assert code == 0, err
    return pre


def test_heldout_command_asks_the_last_lines_once_per_setting(tiny_files, tmp_path, capsys):
    f = tiny_files
    pre = _pretrained(f, tmp_path, capsys)
    code, out, err = run(["heldout", "--reading_params_path", pre, "--pretrain_corpus_path", f["corpus"],
                          "--finetune_corpus_path", f["train"], "--dropouts", "0", "0.1", "--epochs", "1",
                          "--frozen", "", "mlp|emb"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 4  # 2 dropouts x 2 frozen patterns
    # 6 training pairs: the last is held out, the other 5 finetune
    assert all("held-out QA " in ln and "/1 (" in ln and "finetuned on 5 lines" in ln for ln in lines), out
    assert "frozen /mlp|emb/" in lines[1] and "frozen" not in lines[0].split(":")[0]
    one_clear_line(*run(["heldout", "--reading_params_path", tmp_path / "nope", "--pretrain_corpus_path",
                         f["corpus"], "--finetune_corpus_path", f["train"]], capsys)[::2], "no such checkpoint")


def test_a_frozen_setting_leaves_the_matching_parameters_as_pretrained(tiny_files, tmp_path, capsys):
    from factgpt.checkpoint import load_checkpoint

    f = tiny_files
    pre = _pretrained(f, tmp_path, capsys)
    r = heldout_qa(pre, f["corpus"], f["train"], Setting(dropout=0.0, max_epochs=1, frozen="mlp|emb"))
    model = load_checkpoint(pre).build_model()
    frozen = sum(p.numel() for n, p in model.named_parameters() if "mlp" in n or "emb" in n)
    assert r.frozen_parameters == frozen and r.total == 1 and r.finetuned_on == 5
    assert [s.label() for s in settings([0.0], [1e-3], [2], [""])] == ["dropout 0, lr 0.001, 2 epochs"]
