"""The README's report command with ``--collect-only`` rebuilds the committed table from the
published runs alone: run as written (tests/doc_commands.py) in a folder laid out as a clone, with
a copy of ``results/runs`` and nothing trained, it gives the rows of ``results/report.json``."""
import json
import os
import shutil

import pytest

from doc_commands import doc_blocks, make_workspace, run_command
from tiny_models import REPO

PROJECT = os.path.join("projects", "kd_benchmark")
PUBLISHED = os.path.join(REPO, PROJECT, "results")
# Per row: what the table shows (and the run/seed pairing behind it).
COMPARED = ("bbox_AP", "segm_AP", "bbox_AP50", "bbox_AP75", "bbox_gap_closed", "segm_gap_closed")


def _rows(report):
    return {row["run"]: row for row in report["rows"]}


def _same(got, old) -> bool:
    """Equal numbers (to float rounding), lists of them, or both None (e.g. one seed: no std)."""
    return got is None if old is None else got == pytest.approx(old, rel=1e-9, abs=1e-9)


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    """The report.json the documented command writes to ``projects/kd_benchmark/results`` of a
    workspace holding the project's tools, recipes and a copy of the published runs."""
    ws = make_workspace(str(tmp_path_factory.mktemp("kd_report")), REPO, links=("configs",))
    project = os.path.join(ws, PROJECT)
    os.makedirs(os.path.join(project, "results"))
    for name in ("tools", "configs", "kd_benchmark"):
        os.symlink(os.path.join(REPO, PROJECT, name), os.path.join(project, name))
    shutil.copytree(os.path.join(PUBLISHED, "runs"), os.path.join(project, "results", "runs"))
    (command,) = doc_blocks(os.path.join(REPO, PROJECT, "README.md"), named_only=True)["kd-report"].commands
    run_command(command, ["--collect-only"], cwd=ws, env={"OMP_NUM_THREADS": "1"}, timeout=300)
    with open(os.path.join(project, "results", "report.json")) as f:
        return json.load(f)


def test_collect_only_rebuilds_the_committed_rows(rebuilt):
    with open(os.path.join(PUBLISHED, "report.json")) as f:
        committed = json.load(f)
    assert list(_rows(rebuilt)) == list(_rows(committed))  # every recipe, in the table's order
    assert rebuilt["failed_or_missing"] == committed["failed_or_missing"] == []
    for run, row in _rows(committed).items():
        new = _rows(rebuilt)[run]
        assert new["seeds"] == row["seeds"], run
        for key in COMPARED:
            old, got = row.get(key), new.get(key)
            if isinstance(old, dict):  # {"mean", "std", "n", "values" (per seed)}
                for part in ("mean", "std", "values"):
                    assert _same(got[part], old[part]), (run, key, part, got, old)
            else:
                assert _same(got, old), (run, key, got, old)
    assert rebuilt["plateau_change_last_third"] == pytest.approx(committed["plateau_change_last_third"])
