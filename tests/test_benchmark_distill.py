"""tools/benchmark_distill.py on a tiny pair: it times what the distillation step runs and records
the device, AMP and the dtypes the models computed in (no timing is asserted: machine not quiet)."""
import json
import os
import subprocess
import sys

from tiny_models import REPO, distill_cfg, write_config


def test_benchmark_distill_records_device_amp_and_dtypes(tmp_path):
    teacher = write_config(str(tmp_path / "teacher.yaml"))
    config = tmp_path / "distill.yaml"
    config.write_text(distill_cfg(teacher, ["fitnet", "logit_kd"]).dump())
    out = tmp_path / "bench"
    cmd = [sys.executable, os.path.join(REPO, "tools", "benchmark_distill.py"), "--config-file", str(config),
           "--output", str(out), "--image-size", "64", "--batch-size", "1", "--warmup", "0", "--iters", "1",
           "--threads", "1", "SOLVER.AMP.ENABLED", "True", "DISTILL.TEACHER.DTYPE", "float16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "distill_cost.json").read_text())
    assert report["device"] == "cpu" and report["gpu"] is None
    # AMP on: the steps run under Detectron2's CUDA autocast, which leaves CPU tensors in float32.
    assert report["amp"] == {"enabled": True, "autocast_dtype": None}
    # DISTILL.TEACHER.DTYPE float16 is recorded; on the CPU the teacher computes in float32.
    assert report["teacher_dtype"] == "float16"
    assert report["computed_dtypes"] == {"student_features": ["float32"], "teacher_features": ["float32"]}
    assert set(report["phases"]) == {"student_step", "teacher_forward", "distill_step"}
    for phase in report["phases"].values():
        assert phase["device"] == "cpu" and phase["iters"] == 1 and phase["median_s"] > 0
    assert report["opts"][-4:] == ["SOLVER.AMP.ENABLED", "True", "DISTILL.TEACHER.DTYPE", "float16"]
    md = (out / "distill_cost.md").read_text()
    assert "Device cpu, AMP on (autocast: none), DISTILL.TEACHER.DTYPE float16; computed in: student float32, teacher float32" in md
