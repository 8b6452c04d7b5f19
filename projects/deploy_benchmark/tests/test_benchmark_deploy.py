"""projects/deploy_benchmark/tools/benchmark_deploy.py: every model x budget x backend row measured (AP from the same
detections as the backend gives, budgets that reach the graph and the input size, latencies and
file sizes), resumable row by row, and the targets computed from the rows as issue 12 states them."""
import json
import os

import pytest

from deploy_benchmark.benchmark import DEFAULT_BACKENDS, PROFILE_KEY, DeployModel, NamedBudget, bar_checks, markdown_report
from deploy_benchmark.op_profile import int8_speedup_bound, quantizable_share
from tiny_models import save_random_weights, tool_main, write_config

TOOLS = "projects/deploy_benchmark/tools"

pytestmark = pytest.mark.usefixtures("one_thread")

ALL_DETECTIONS = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "20"]
LEAN = "lean=fast:TEST.DETECTIONS_PER_IMAGE=3,INPUT.MIN_SIZE_TEST=96,INPUT.MAX_SIZE_TEST=120"


@pytest.fixture(scope="module")
def deploy_run(tmp_path_factory, synthetic_root):
    folder = tmp_path_factory.mktemp("deploy")
    config = write_config(str(folder / "model.yaml"), opts=ALL_DETECTIONS)
    weights = save_random_weights(config, str(folder / "model.pth"))
    out = str(folder / "bench")
    argv = ["--output", out, "--dataset", "synthetic_doclaynet_val", "--ap-images", "2",
            "--model", f"tiny={config}:{weights}", "--budget", "accurate", "--budget", LEAN,
            "--threads", "1", "--runs", "1", "--warmup", "0", "--calibration", "synthetic_doclaynet_train",
            "--calibration-images", "2"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETECTRON2_DATASETS", synthetic_root)
        assert tool_main("benchmark_deploy", TOOLS)(argv) == 0
        yield out, argv


def _report(out):
    with open(os.path.join(out, "deploy.json")) as f:
        return json.load(f)


def test_every_row_measured_with_its_budget(deploy_run):
    out, _ = deploy_run
    rows = _report(out)["rows"]
    assert [(r["budget"], r["backend"]) for r in rows] == [(b, k) for b in ("accurate", "lean") for k in DEFAULT_BACKENDS]
    for r in rows:
        assert r["ap_images"] == 2 and 0.0 <= r["bbox_AP"] <= 100.0
        assert all(v > 0 for v in r["latency_ms"].values()) and set(r["latency_ms"]) == {"test_size_1t_ms", "800px_1t_ms"}
        assert r["file_size_mb"] == pytest.approx(os.path.getsize(os.path.join(out, r["file"])) / 1e6)
        assert r["peak_rss_mb"] > 100
        assert max(r["input_size_800px"]) > 500  # the 800-px page, whatever the test size
    by = {(r["budget"], r["backend"]): r for r in rows}
    for budget, per_page, size in (("accurate", 20, (128, 160)), ("lean", 3, (96, 120))):
        assert by[budget, "pytorch"]["budget_values"]["TEST.DETECTIONS_PER_IMAGE"] == per_page
        assert by[budget, "pytorch"]["test_size"] == list(size)
        assert min(by[budget, "pytorch"]["input_size_test"]) <= size[0]
        # The float backends give the same detections: the same count (score threshold 0: a full page each).
        counts = {by[budget, b]["detections"] for b in ("pytorch", "torchscript", "onnx")}
        assert counts == {2 * per_page}
    # The ONNX rows say where their time goes: float convolutions in the float graph, int8 ones in
    # the int8 graph; the other backends have no op profile.
    for budget in ("accurate", "lean"):
        fp32, int8 = by[budget, "onnx"][PROFILE_KEY], by[budget, "onnx-int8"][PROFILE_KEY]
        assert all(v >= 0 for v in [*fp32.values(), *int8.values()]) and sum(fp32.values()) > 0
        assert "QLinearConv" in int8 and "QLinearConv" not in fp32 and 0 < quantizable_share(fp32) < 1
        assert PROFILE_KEY not in by[budget, "pytorch"] and PROFILE_KEY not in by[budget, "torchscript"]
    # int8 file: quantized weights, about a quarter of the float file.
    assert by["accurate", "onnx-int8"]["file_size_mb"] < 0.5 * by["accurate", "onnx"]["file_size_mb"]
    for name in ("deploy.md", "deploy.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0


def test_second_call_measures_only_missing_rows(deploy_run):
    out, argv = deploy_run
    rows_dir = os.path.join(out, "rows")
    kept = {f: os.path.getmtime(os.path.join(rows_dir, f)) for f in os.listdir(rows_dir)}
    assert len(kept) == 8
    os.remove(os.path.join(rows_dir, "tiny__lean__onnx.json"))
    assert tool_main("benchmark_deploy", TOOLS)(argv + ["--report-only"]) == 0  # an interrupted run's report
    assert len(_report(out)["rows"]) == 7 and len(os.listdir(rows_dir)) == 7
    assert tool_main("benchmark_deploy", TOOLS)(argv) == 0
    for f, mtime in kept.items():
        if f != "tiny__lean__onnx.json":
            assert os.path.getmtime(os.path.join(rows_dir, f)) == mtime, f
    assert os.path.isfile(os.path.join(rows_dir, "tiny__lean__onnx.json"))
    assert len(_report(out)["rows"]) == 8

    # A row measured before op profiles existed gets its profile, and keeps its measurements.
    path = os.path.join(rows_dir, "tiny__accurate__onnx-int8.json")
    with open(path) as f:
        row = json.load(f)
    old = {k: v for k, v in row.items() if k != PROFILE_KEY}
    with open(path, "w") as f:
        json.dump(old, f)
    assert tool_main("benchmark_deploy", TOOLS)(argv) == 0
    with open(path) as f:
        row = json.load(f)
    assert {k: v for k, v in row.items() if k != PROFILE_KEY} == old and "QLinearConv" in row[PROFILE_KEY]


def test_int8_with_7bit_weights_is_its_own_row_and_export(deploy_run):
    """--backends ... onnx-int8-7bit: int8 with reduce_range (CPUs without VNNI) is measured
    beside the 8-bit rows (which are kept), quantized from the same float graph (not exported
    again) into a folder of its own, and checked against ONNX fp32."""
    out, argv = deploy_run
    rows_dir = os.path.join(out, "rows")
    kept = {f: os.path.getmtime(os.path.join(rows_dir, f)) for f in os.listdir(rows_dir)}
    assert tool_main("benchmark_deploy", TOOLS)(argv + ["--backends", *DEFAULT_BACKENDS, "onnx-int8-7bit"]) == 0
    assert all(os.path.getmtime(os.path.join(rows_dir, f)) == t for f, t in kept.items())
    report = _report(out)
    by = {(r["budget"], r["backend"]): r for r in report["rows"]}
    assert len(by) == 10
    seven, eight = by["accurate", "onnx-int8-7bit"], by["accurate", "onnx-int8"]
    assert seven["file"] != eight["file"] and "QLinearConv" in seven[PROFILE_KEY]
    seven_dir = os.path.dirname(os.path.join(out, seven["file"]))
    with open(os.path.join(seven_dir, "export_info.json")) as f:
        info = json.load(f)
    assert info["quantization"]["reduce_range"] is True and info["file"] == "model.int8.onnx"
    assert info["export_method"].count("; int8:") == 1
    assert sorted(os.listdir(seven_dir)) == ["export_info.json", "model.int8.onnx"]
    float_file = os.path.normpath(os.path.join(seven_dir, info["quantization"]["float_file"]))
    assert float_file == os.path.normpath(os.path.join(out, by["accurate", "onnx"]["file"]))
    with open(os.path.join(os.path.dirname(os.path.join(out, eight["file"])), "export_info.json")) as f:
        assert json.load(f)["quantization"]["reduce_range"] is False
    assert "| op type | ONNX fp32 | ONNX int8 | ONNX int8 7-bit |" in open(os.path.join(out, "deploy.md")).read()


def _row(model, budget, backend, ap, ms):
    return {"model": model, "budget": budget, "backend": backend, "bbox_AP": ap, "latency_ms": {"800px_2t_ms": ms}}


def test_targets_from_rows():
    rows = [
        _row("teacher", "accurate", "pytorch", 50.0, 900.0),
        _row("student", "accurate", "pytorch", 40.0, 400.0),
        _row("student", "accurate", "onnx", 40.0, 300.0),
        _row("student", "accurate", "onnx-int8", 39.5, 150.0),
        _row("student", "lean", "onnx", 38.0, 200.0),  # faster but 2 AP below the student: not eligible
        _row("student", "lean", "onnx-int8", 35.0, 100.0),
        _row("student", "lean", "onnx-int8-7bit", 37.5, 125.0),  # 7-bit weights: checked on their own
    ]
    checks = bar_checks(rows, "teacher", 2)
    vs_teacher = checks[0]
    assert vs_teacher["row"] == "accurate/onnx-int8" and vs_teacher["speedup"] == pytest.approx(6.0)
    assert vs_teacher["ap_delta"] == pytest.approx(-0.5) and vs_teacher["passed"]
    int8 = {c["row"]: c for c in checks[1:]}
    assert int8["accurate/onnx-int8"]["speedup"] == pytest.approx(2.0) and int8["accurate/onnx-int8"]["passed"]
    assert int8["lean/onnx-int8"]["speedup"] == pytest.approx(2.0) and not int8["lean/onnx-int8"]["passed"]  # -3 AP
    assert int8["lean/onnx-int8-7bit"]["speedup"] == pytest.approx(1.6) and int8["lean/onnx-int8-7bit"]["passed"]
    assert set(int8) == {"accurate/onnx-int8", "lean/onnx-int8", "lean/onnx-int8-7bit"}


def test_int8_speedup_bound_from_the_float_profile():
    """Half the float graph's node time in ops int8 replaces (convolutions, their fused forms and
    layout conversions): int8 can make it at most 2x faster; the bound sits beside the target."""
    fp32 = {"Conv": 30.0, "FusedConv": 10.0, "ReorderInput": 10.0, "InstanceNormalization": 40.0, "RoiAlign": 10.0}
    assert quantizable_share(fp32) == pytest.approx(0.5) and int8_speedup_bound(fp32) == pytest.approx(2.0)
    assert int8_speedup_bound({"Conv": 1.0}) == float("inf")
    rows = [_row("teacher", "accurate", "pytorch", 50.0, 900.0), _row("student", "accurate", "pytorch", 40.0, 400.0),
            {**_row("student", "accurate", "onnx", 40.0, 300.0), PROFILE_KEY: fp32},
            {**_row("student", "accurate", "onnx-int8", 39.5, 250.0), PROFILE_KEY: {"QLinearConv": 20.0, "Transpose": 5.0}}]
    int8 = bar_checks(rows, "teacher", 2)[1]
    assert int8["speedup_bound"] == pytest.approx(2.0) and not int8["passed"]
    for row in rows:
        row.update(latency_ms={"test_size_2t_ms": 1.0, "800px_2t_ms": row["latency_ms"]["800px_2t_ms"]},
                   bbox_AP50=0.0, peak_rss_mb=0.0, file_size_mb=0.0)
    md = markdown_report(rows, bar_checks(rows, "teacher", 2), {"threads": [2], "bar_threads": 2})
    assert "at most 2.00x by the float profile" in md
    assert "| InstanceNormalization | 40.0 | - |" in md and "| QLinearConv | - | 20.0 |" in md
    assert "| **all nodes** | 100.0 | 25.0 |" in md


def test_model_and_budget_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        DeployModel.parse(f"s={__file__}:{tmp_path}/missing.pth")
    with pytest.raises(ValueError, match="NAME=CONFIG:WEIGHTS"):
        DeployModel.parse("no-weights.yaml")
    lean = NamedBudget.parse("lean=fast:MODEL.RPN.POST_NMS_TOPK_TEST=100")
    assert (lean.label, lean.budget.preset, lean.budget.overrides) == ("lean", "fast", ["MODEL.RPN.POST_NMS_TOPK_TEST", "100"])
    assert NamedBudget.parse("fast").label == "fast" and NamedBudget.parse("fast").budget.preset == "fast"
    with pytest.raises(ValueError, match="MODEL.WEIGHTS"):
        NamedBudget.parse("x=fast:MODEL.WEIGHTS=a.pth")
