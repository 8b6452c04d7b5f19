"""projects/kd_benchmark/tools/benchmark_jobs.py: side-by-side vs sequential trainings, timed and written as JSON/Markdown."""
import json

import pytest

from tiny_models import load_tool

# A stand-in training that takes 1 s of wall time whatever its threads (a sleeping process), and
# records the thread count it was given.
FAKE = r'''
import os, sys, time
out = sys.argv[sys.argv.index("OUTPUT_DIR") + 1]
assert sys.argv[sys.argv.index("SOLVER.MAX_ITER") + 1] == "3"
time.sleep(1.0)
open(out + ".threads", "w").write(os.environ["OMP_NUM_THREADS"])
'''


def test_side_by_side_and_sequential_are_timed(tmp_path, monkeypatch):
    fake = tmp_path / "fake.py"
    fake.write_text(FAKE)
    tool = load_tool("benchmark_jobs", "projects/kd_benchmark/tools")
    monkeypatch.setattr(tool, "TRAIN_NET", str(fake))
    assert tool.main(["--config-file", "x.yaml", "--iters", "3", "--jobs", "2", "--threads", "2",
                      "--output", str(tmp_path / "out")]) == 0
    result = json.load(open(tmp_path / "out" / "jobs.json"))
    # Two 1-s sleepers: about 1 s side by side, about 2 s one after the other.
    assert result["side_by_side_s"] == pytest.approx(1.0, abs=0.9)
    assert result["sequential_s"] >= 2.0 and result["faster"] == "side_by_side"
    assert "side by side, 1 thread(s) each" in (tmp_path / "out" / "jobs.md").read_text()
