"""The protocol's table from published-run folders made in the test."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import analyze  # noqa: E402

DATASET = "synthetic_doclaynet_test"


def _eval(folder, bbox, segm):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"eval_{DATASET}.json").write_text(json.dumps(
        {"dataset": DATASET, "results": {"bbox": {"AP": bbox}, "segm": {"AP": segm}}}))


def _row(root, name, values):
    for seed, ap in values.items():
        _eval(root / name / f"seed{seed}", ap, ap + 1)
    return f"{name}={root / name}"


def test_table_pairs_by_seed_and_tests_the_family_against_the_3x_control(tmp_path):
    sup1 = {42: 20.0, 1: 21.0, 2: 19.0}
    sup3 = {42: 22.0, 1: 23.0, 2: 21.0}
    rec = {42: 27.0, 1: 28.5, 2: 25.5}  # +5, +5.5, +4.5 over supervised 3x
    feat = {42: 22.5, 1: 22.0, 2: 21.5}  # +0.5, -1, +0.5 over supervised 3x
    rows = [_row(tmp_path, n, v) for n, v in (("sup1", sup1), ("sup3", sup3), ("rec", rec), ("feat", feat))]
    _eval(tmp_path / "teacher", 30.0, 31.0)
    out = tmp_path / "report"
    analyze.main([*sum((["--row", r] for r in rows), []), "--teacher", str(tmp_path / "teacher"),
                  "--reference-1x", "sup1", "--reference-3x", "sup3", "--family", "rec", "feat", "--out", str(out)])
    report = json.loads((tmp_path / "report.json").read_text())
    by_name = {r["name"]: r for r in report["rows"]}
    assert by_name["rec"]["bbox"]["mean"] == pytest.approx(27.0) and by_name["rec"]["segm"]["mean"] == pytest.approx(28.0)
    assert by_name["rec"]["vs_supervised_3x"]["mean"] == pytest.approx(5.0)
    assert by_name["rec"]["vs_supervised_1x"]["mean"] == pytest.approx(7.0)
    assert by_name["rec"]["gap_closed_vs_1x"]["mean"] == pytest.approx(0.7)  # 7 of the 10-point gap
    assert by_name["rec"]["gap_closed_vs_3x"]["mean"] == pytest.approx(5.0 / 8.0)  # 5 of the 30 - 22 gap
    assert by_name["feat"]["gap_closed_vs_3x"]["mean"] == pytest.approx(0.0, abs=1e-9)  # +0.5, -1, +0.5 of 8
    assert "gap_closed_vs_3x" not in by_name["sup1"]  # outside the family
    holm = report["holm_vs_supervised_3x"]
    assert holm["rec"]["rejected"] and holm["rec"]["difference"]["low"] > 0
    assert not holm["feat"]["rejected"] and holm["feat"]["difference"]["low"] < 0
    md = (tmp_path / "report.md").read_text()
    assert "| rec | 3 | 27.0 ± 1.5 | 28.0 ± 1.5 | +7.0 [" in md and "| 70% [" in md and "| 62% [" in md


def test_a_missing_test_evaluation_is_an_error_naming_the_folder(tmp_path):
    (tmp_path / "sup1" / "seed42").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=f"no {DATASET} evaluation under .*sup1"):
        analyze.seed_results(str(tmp_path / "sup1"))


def test_a_recommended_recipe_that_is_f_star_itself_is_tested_once(tmp_path):
    sup = {42: 20.0, 1: 21.0, 2: 19.0}
    feat = {42: 25.0, 1: 26.5, 2: 23.5}
    resp = {42: 20.5, 1: 20.0, 2: 19.5}
    rows = [_row(tmp_path, n, v) for n, v in (("sup1", sup), ("sup3", sup), ("feat", feat), ("resp", resp))]
    rows.append(f"rec={tmp_path / 'feat'}")  # the recommended recipe's runs are F*'s
    _eval(tmp_path / "teacher", 30.0, 31.0)
    analyze.main([*sum((["--row", r] for r in rows), []), "--teacher", str(tmp_path / "teacher"),
                  "--reference-1x", "sup1", "--reference-3x", "sup3", "--family", "rec", "feat", "resp",
                  "--out", str(tmp_path / "report")])
    report = json.loads((tmp_path / "report.json").read_text())
    holm = report["holm_vs_supervised_3x"]
    assert set(holm) == {"rec", "resp"} and report["same_runs_as"] == {"feat": "rec"}
    # two hypotheses: the smaller p-value is tested at 0.05 / 2, the other at 0.05
    assert sorted(h["holm_alpha"] for h in holm.values()) == [pytest.approx(0.025), pytest.approx(0.05)]
    assert "feat are the runs of rec" in (tmp_path / "report.md").read_text()


def test_a_from_scratch_row_is_paired_with_the_from_scratch_supervised_student(tmp_path):
    sup = {42: 30.0, 1: 31.0, 2: 29.0}
    scratch_sup = {42: 10.0, 1: 12.0, 2: 11.0}
    scratch_rec = {42: 14.0, 1: 15.0, 2: 16.0}  # +4, +3, +5 over its own supervised student
    rows = [_row(tmp_path, n, v) for n, v in (("sup1", sup), ("sup3", sup), ("rec", sup),
                                              ("scratch_sup", scratch_sup), ("scratch_rec", scratch_rec))]
    _eval(tmp_path / "teacher", 40.0, 41.0)
    analyze.main([*sum((["--row", r] for r in rows), []), "--teacher", str(tmp_path / "teacher"),
                  "--reference-1x", "sup1", "--reference-3x", "sup3", "--family", "rec",
                  "--reference", "scratch_rec=scratch_sup", "--out", str(tmp_path / "report")])
    by_name = {r["name"]: r for r in json.loads((tmp_path / "report.json").read_text())["rows"]}
    scratch = by_name["scratch_rec"]
    assert scratch["supervised_1x"] == "scratch_sup" and scratch["vs_supervised_1x"]["mean"] == pytest.approx(4.0)
    assert scratch["gap_closed_vs_1x"]["mean"] == pytest.approx(4.0 / 29.0)  # of the 40 - 11 gap
    assert by_name["scratch_sup"]["vs_supervised_1x"]["mean"] == pytest.approx(-19.0)  # still vs sup1
    assert "scratch_rec: Δ and gap closed vs 1x against scratch_sup." in (tmp_path / "report.md").read_text()
    with pytest.raises(ValueError, match="'nope' is not one of the rows"):
        analyze.main([*sum((["--row", r] for r in rows), []), "--teacher", str(tmp_path / "teacher"),
                      "--reference-1x", "sup1", "--reference-3x", "sup3", "--family", "rec",
                      "--reference", "scratch_rec=nope", "--out", str(tmp_path / "report")])
