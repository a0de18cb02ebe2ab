"""Each claim of the attention-exploration answers is a test (fast, seeded)."""

from __future__ import annotations

import math

import pytest
import torch

from factgpt.cli import main
from factgpt.lab.attention import copy_threshold, layer_output, orthonormal, run_lab

from conftest import markdown_tables


@pytest.fixture(scope="module")
def lab():
    checks, data = run_lab(samples=600, seed=1)
    return {c.claim[:3] + c.claim[4:20]: c for c in checks}, data


def _check(lab, prefix):
    checks, _ = lab
    found = [c for k, c in checks.items() if k.startswith(prefix)]
    assert found, prefix
    return found


def test_a_copying(lab):
    (c,) = _check(lab, "(a)")
    assert c.passed, c.measured


def test_b_averaging_and_recovery(lab):
    for c in _check(lab, "(b)"):
        assert c.passed, c.measured


def test_c_tiny_noise_averages_and_mean_aligned_noise_swings(lab):
    cs = _check(lab, "(c)")
    assert len(cs) == 2
    for c in cs:
        assert c.passed, c.measured


def test_d_two_heads_remove_the_swing(lab):
    (c,) = _check(lab, "(d)")
    assert c.passed, c.measured
    _, data = lab
    cov = data["cd"]["along mu_a"]
    assert cov["two"].std() < cov["one"].std() / 2


def test_real_layer_copies_beyond_the_threshold_and_not_below():
    g = torch.Generator().manual_seed(0)
    K = orthonormal(8, 32, g)
    beta = copy_threshold(8, 0.01)
    assert float(layer_output(K, K[3], beta + 0.01) @ K[3]) >= 0.99
    assert float(layer_output(K, K[3], beta - 1.0) @ K[3]) < 0.99
    assert float(layer_output(K, K[3], 0.0) @ K[3]) == pytest.approx(1 / 8)  # beta = 0: a plain average
    assert copy_threshold(8, 0.01) == pytest.approx(math.log(7 * 99))


def test_cli_writes_report_and_figures(tmp_path, capsys):
    assert main(["attention-lab", "--out", str(tmp_path), "--samples", "300"]) == 0
    assert capsys.readouterr().out.count("PASS") == 6
    for name in ("report.md", "copy_average.png", "heads_spread.png", "recovery.png"):
        assert (tmp_path / name).is_file()
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "every one of 300 samples" in report  # the prose counts this run's samples
    (checks,) = markdown_tables(report)  # the criteria's |c - v| are escaped: one table, 4 cells a row
    assert len(checks) == 8 and checks[2][-1] == "PASS"
