"""The KD report's arithmetic (seed rows, gap closed, paired deltas), its final-evaluation rule
and learning curves."""
import json
import math
from pathlib import Path

import pytest

from dla_kd.evaluation import save_eval_results
from kd_benchmark.curves import mean_curve, plateau_change, plot_curves, read_curve
from kd_benchmark.report import build_seed_rows, format_seed_report, gap_closed, load_eval, report_markdown


def _res(ap, text_ap):
    return {t: {"AP": ap, "AP50": ap + 10, "AP75": ap - 5, "AP-Text": text_ap, "AP-Title": None} for t in ("bbox", "segm")}


def test_gap_closed_and_seed_rows():
    assert gap_closed(65.0, 60.0, 70.0) == pytest.approx(0.5)
    assert gap_closed(55.0, 60.0, 70.0) == pytest.approx(-0.5)
    assert gap_closed(65.0, 60.0, 60.0) is None  # teacher not better: undefined
    assert gap_closed(None, 60.0, 70.0) is None
    rows = build_seed_rows({
        "teacher": [_res(70.0, 80.0)],
        "student": [_res(59.0, 70.0), _res(61.0, 70.0)],
        "fitnet": [_res(62.0, 71.0), _res(63.0, 71.0)],
    })
    assert [r["run"] for r in rows] == ["teacher", "student", "fitnet"]
    assert rows[0]["bbox_gap_closed"] is None and rows[1]["bbox_gap_closed"] is None
    assert rows[1]["bbox_AP"]["mean"] == pytest.approx(60.0)
    assert rows[1]["bbox_AP"]["std"] == pytest.approx(2 ** 0.5)  # sample std of 59, 61
    assert rows[0]["bbox_AP"]["std"] is None  # one seed: no std
    assert rows[2]["bbox_gap_closed"] == pytest.approx(0.25)  # (62.5 - 60) / (70 - 60), on the means
    assert rows[2]["bbox_delta_in_student_std"] == pytest.approx(2.5 / 2 ** 0.5)
    assert rows[2]["per_class_bbox_AP"] == {"Text": 71.0, "Title": None}
    md = format_seed_report(rows, {"fitnet": {"params_M": 5.123, "gflops": 2.04}})
    assert "| fitnet | 2 | 62.5 ± 0.7 | 72.5 ± 0.7 | 57.5 ± 0.7 | 62.5 ± 0.7 | 72.5 ± 0.7 | 57.5 ± 0.7 | +25% | +25% | +1.8 | 5.12 | 2.0 |" in md
    assert "| teacher | 1 | 70.0 | 80.0 | 65.0 |" in md
    assert "| fitnet | 71.0 | - |" in md


def test_paired_delta_pairs_each_kd_seed_with_the_supervised_run_of_that_seed():
    """Seeds matched by value, not by position; a seed the student lacks is left out."""
    results = {"teacher": [_res(70.0, 80.0)], "student": [_res(59.0, 70.0), _res(61.0, 70.0)],
               "fitnet": [_res(63.0, 71.0), _res(62.0, 71.0), _res(90.0, 71.0)]}
    rows = build_seed_rows(results, seeds={"student": [42, 1], "fitnet": [1, 42, 7]})
    delta = rows[2]["bbox_paired_delta"]
    assert delta["seeds"] == [1, 42] and delta["values"] == pytest.approx([2.0, 3.0])  # 63 - 61, 62 - 59
    assert delta["mean"] == pytest.approx(2.5) and delta["std"] == pytest.approx(0.5 ** 0.5)
    assert "bbox_paired_delta" not in rows[0] and "bbox_paired_delta" not in rows[1]
    md = format_seed_report(rows)
    assert "paired Δ bbox (same seed)" in md
    assert "| +8.2 | +2.5 ± 0.7 | - | - |" in md  # unpaired: (71.7 - 60) / std 1.41; paired: diffs 2, 3
    assert "| student | 2 |" in md and md.split("| student | 2 |")[1].split("\n")[0].endswith("| - | - | - | - |")


def test_load_eval_counts_only_the_final_evaluation(tmp_path):
    save_eval_results(_res(50.0, 60.0), str(tmp_path), "val", iteration=499)
    assert load_eval(str(tmp_path), "val", final_iteration=2999) is None  # a periodic evaluation
    assert load_eval(str(tmp_path), "val")["bbox"]["AP"] == 50.0
    save_eval_results(_res(55.0, 60.0), str(tmp_path), "val", iteration=2999)
    assert load_eval(str(tmp_path), "val", final_iteration=2999)["bbox"]["AP"] == 55.0


def test_learning_curves_from_metrics_json(tmp_path):
    lines = [{"iteration": 19, "total_loss": 3.0}, {"iteration": 499, "bbox/AP": 10.0},
             {"iteration": 999, "bbox/AP": 20.0}, {"iteration": 999, "bbox/AP": 21.0},  # resumed: last wins
             {"iteration": 1499, "bbox/AP": 20.5}]
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n{\"iteration\": 15")  # cut line
    curve = read_curve(str(run))
    assert curve == [(499, 10.0), (999, 21.0), (1499, 20.5)]
    assert mean_curve([curve, [(499, 12.0), (999, 23.0)]]) == [(499, 11.0), (999, 22.0)]
    # Last third of 1499 iterations starts at ~999: |21.0 - 20.5| = 0.5.
    assert plateau_change(curve) == pytest.approx(0.5)
    assert plateau_change(curve, max_iter=1500) == pytest.approx(0.5)
    assert math.isnan(plateau_change(curve, max_iter=3000))  # still training: no verdict
    png = plot_curves({"student": curve}, str(tmp_path / "curves.png"), "t")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_the_published_report_md_is_the_markdown_of_its_json():
    """report.md is a function of report.json alone: the published table rebuilds from it."""
    report = json.loads((RESULTS / "report.json").read_text())
    assert report_markdown(report, "curves.png") == (RESULTS / "report.md").read_text()
