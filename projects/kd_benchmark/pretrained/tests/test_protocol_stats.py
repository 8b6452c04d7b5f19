"""The statistics of protocol.md on small hand-checked cases."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from protocol_stats import gap_closed, holm, paired_difference  # noqa: E402

REF = {42: 20.0, 1: 21.0, 2: 19.0}


def test_paired_difference_is_the_t_interval_of_same_seed_differences():
    row = {42: 21.0, 1: 23.0, 2: 22.0, 7: 99.0}  # seed 7 has no partner: ignored
    d = paired_difference(row, REF)  # differences 1, 2, 3
    assert (d.n, d.mean, d.std) == (3, 2.0, 1.0)
    half = 4.302652729911275 / np.sqrt(3)  # t(0.975, 2)
    assert d.low == pytest.approx(2 - half) and d.high == pytest.approx(2 + half)
    assert d.p_greater == pytest.approx(0.03700, abs=1e-4)  # t = 2 sqrt(3), 2 df


def test_holm_steps_down_and_its_interval_agrees_with_its_decision():
    strong = {42: 25.0, 1: 26.1, 2: 23.9}  # differences 5, 5.1, 4.9
    weak = {42: 21.0, 1: 23.0, 2: 22.0}  # p 0.037
    out = holm({"weak": weak, "strong": strong}, REF)
    assert out["strong"]["holm_alpha"] == pytest.approx(0.025) and out["strong"]["rejected"]
    assert out["weak"]["holm_alpha"] == pytest.approx(0.05) and out["weak"]["rejected"]
    assert out["weak"]["difference"].low > 0  # 90% interval at the second step
    noise = {42: 20.5, 1: 20.0, 2: 19.8}  # differences 0.5, -1, 0.8
    out = holm({"weak": weak, "noise": noise}, REF)
    assert not out["weak"]["rejected"] and not out["noise"]["rejected"]  # 0.037 > 0.025 at step 1
    assert out["weak"]["difference"].low < 0  # its 95% interval (step 1) holds zero
    # Once a step fails, later rows are not rejected even with a small p.
    out = holm({"weak": weak, "noise": noise, "strong": strong}, REF)
    assert out["strong"]["rejected"] and not out["weak"]["rejected"]


def test_gap_closed_and_its_bootstrap_interval():
    row = {42: 25.0, 1: 26.0, 2: 24.0}  # +5 on every seed, student mean 20, teacher 30
    g = gap_closed(row, REF, teacher=30.0, n_boot=2000)
    assert g["mean"] == pytest.approx(0.5) and g["seeds"] == 3
    assert g["low"] <= 0.5 <= g["high"] and g["high"] - g["low"] < 0.2
    spread = gap_closed({42: 21.0, 1: 27.0, 2: 24.0}, REF, teacher=30.0, n_boot=2000)
    assert spread["high"] - spread["low"] > g["high"] - g["low"]
