"""Package-level behaviour: the Detectron2 import guard and the KD report arithmetic."""
import subprocess
import sys

import pytest

from dla_kd.evaluation.kd_report import build_rows, format_report, gap_closed


def test_import_without_detectron2_explains_how_to_install():
    code = "import sys; sys.modules['detectron2'] = None; import dla_kd"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "ImportError: dla-kd needs Detectron2" in proc.stderr
    assert "sal-detectron2==0.7.2" in proc.stderr and "scripts/setup.sh" in proc.stderr
    assert "git+https://github.com/facebookresearch/detectron2.git" in proc.stderr


def _res(ap, text_ap):
    return {t: {"AP": ap, "AP50": ap + 10, "AP75": ap - 5, "AP-Text": text_ap, "AP-Title": None} for t in ("bbox", "segm")}


def test_gap_closed_and_rows():
    assert gap_closed(65.0, 60.0, 70.0) == pytest.approx(0.5)
    assert gap_closed(55.0, 60.0, 70.0) == pytest.approx(-0.5)
    assert gap_closed(65.0, 60.0, 60.0) is None  # teacher not better: undefined
    assert gap_closed(None, 60.0, 70.0) is None
    rows = build_rows({"teacher": _res(70.0, 80.0), "student": _res(60.0, 70.0), "fitnet": _res(62.5, 71.0)})
    assert [r["run"] for r in rows] == ["teacher", "student", "fitnet"]
    assert rows[0]["bbox_gap_closed"] is None and rows[1]["bbox_gap_closed"] is None
    assert rows[2]["bbox_gap_closed"] == pytest.approx(0.25)
    assert rows[2]["per_class_bbox_AP"] == {"Text": 71.0, "Title": None}
    md = format_report(rows, "t")
    assert "| fitnet | 62.5 | 72.5 | 57.5 | 62.5 | 72.5 | 57.5 | +25% | +25% |" in md
    assert "| fitnet | 71.0 | - |" in md
