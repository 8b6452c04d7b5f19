"""int8 ONNX export and test-time budgets on tiny random-init models: onnxruntime static QDQ
quantization of the feature convolutions/FCs with the prediction layers, box decoding, NMS and
RoIAlign left float; the COCO bbox AP check of the int8 model against the float one (numbers,
export_info.json, exit codes); budgets (presets, overrides) that change what the exported graph
and a checkpoint predictor do, also for a SimKD student."""
import json
import os
from collections import defaultdict

import numpy as np
import onnx
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, BoxMode, Instances

from dla_kd import Predictor
from dla_kd.engine import load_config
from dla_kd.export import ExportResult, ModelSpec, load_exported, preprocess
from dla_kd.export.ap_check import APCheck
from dla_kd.inference.budget import Budget
from dla_kd.inference.samples import read_image_rgb
from dla_kd.inference.student import deployable_cfg
from tiny_models import MICRO, TINY, distill_cfg, load_tool, onnx_nodes, save_pages, tool_main, write_config

pytestmark = pytest.mark.usefixtures("one_thread")

OUTPUT_NAMES = ["pred_boxes", "pred_classes", "pred_masks", "scores", "image_size"]
ALL_DETECTIONS = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "25"]
PREDICTION_LAYERS = ("rpn_head.objectness_logits.", "rpn_head.anchor_deltas.", "box_predictor.cls_score.",
                     "box_predictor.bbox_pred.", "mask_head.predictor.")


@pytest.fixture(scope="module")
def detector(tmp_path_factory, synthetic_root):
    """(folder, config, weights, calibration folder, page) of a tiny random-init Mask R-CNN; the
    synthetic datasets root is active for the module."""
    folder = tmp_path_factory.mktemp("int8")
    config = write_config(str(folder / "model.yaml"), TINY, ALL_DETECTIONS)
    torch.manual_seed(0)
    weights = str(folder / "model.pth")
    torch.save({"model": build_model(load_config(config)).state_dict()}, weights)
    calibration = folder / "calibration"
    calibration.mkdir()
    save_pages(str(calibration), [(150, 120), (130, 170)])
    page = save_pages(str(folder), [(160, 140)], seed=5)[0]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETECTRON2_DATASETS", synthetic_root)
        yield str(folder), config, weights, str(calibration), page


@pytest.fixture(scope="module")
def int8_export(detector):
    """The tool's int8 export, AP-checked on the 2 synthetic val pages: (folder, exit status)."""
    folder, config, weights, calibration, _ = detector
    out = os.path.join(folder, "onnx_int8")
    meta = MetadataCatalog.get("synthetic_doclaynet_val")
    if "json_file" in meta.as_dict():  # set by an earlier test's evaluator in this process
        delattr(meta, "json_file")
    status = tool_main("export_model")([
        "--config-file", config, "--format", "onnx", "--output", out, "--quantize", "int8",
        "--calibration", calibration, "--check-dataset", "synthetic_doclaynet_val", "--check-images", "2",
        "MODEL.WEIGHTS", weights])
    return out, status


def graph_links(graph):
    """(producer node of each tensor, consumer nodes of each tensor, initializer names)."""
    producers = {o: n for n in graph.node for o in n.output}
    consumers = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    return producers, consumers, {i.name for i in graph.initializer}


def test_int8_graph_quantizes_features_and_keeps_boxes_float(int8_export):
    out, status = int8_export
    assert status == 0
    assert {"model.onnx", "model.int8.onnx", "export_info.json", "student_config.yaml"} <= set(os.listdir(out))
    graph = onnx.load(os.path.join(out, "model.int8.onnx")).graph
    producers, consumers, initializers = graph_links(graph)
    op = lambda tensor: producers[tensor].op_type if tensor in producers else None  # noqa: E731

    layers = [n for n in graph.node if n.op_type in ("Conv", "Gemm")]
    prediction = [n for n in layers if any(p in n.input[1] for p in PREDICTION_LAYERS)]  # by weight name
    features = [n for n in layers if n not in prediction]
    assert len(prediction) == 5 * 2 + 2 + 1  # RPN (2 per FPN level), box classifier + regression, mask predictor
    assert {n.op_type for n in features} == {"Conv", "Gemm"} and len(features) > 20
    for n in features:  # QDQ around every feature Conv/Gemm: dequantized int8 input and weight, quantized output
        assert op(n.input[0]) == op(n.input[1]) == "DequantizeLinear", n.name
        assert [c.op_type for c in consumers[n.output[0]]] == ["QuantizeLinear"], n.name
    for n in prediction:  # float weights, float outputs
        assert n.input[1] in initializers and op(n.input[1]) is None, n.name
        assert "QuantizeLinear" not in {c.op_type for c in consumers[n.output[0]]}, n.name

    roi_aligns = [n for n in graph.node if n.op_type == "RoiAlign"]
    assert len(roi_aligns) == 8  # box + mask pooler, 4 levels each
    for n in roi_aligns:  # boxes from float decoding, float output (no int8 RoIAlign)
        assert op(n.input[1]) != "DequantizeLinear" and op(n.input[2]) != "DequantizeLinear"
        assert not any(c.op_type == "QuantizeLinear" for c in consumers[n.output[0]])
    nms_graphs = [a.g for n in graph.node if n.op_type == "If" for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    nms = [n for g in nms_graphs for n in onnx_nodes(g) if n.op_type == "NonMaxSuppression"]
    assert nms and not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for g in nms_graphs for n in onnx_nodes(g))
    for n in nms:
        assert all(i not in producers or op(i) != "DequantizeLinear" for i in n.input)
    assert [o.name for o in graph.output] == OUTPUT_NAMES
    assert [o.name for o in onnx.load(os.path.join(out, "model.onnx")).graph.output] == OUTPUT_NAMES


def test_int8_export_info_and_ap_check(int8_export, detector):
    out, _ = int8_export
    with open(os.path.join(out, "export_info.json")) as f:
        info = json.load(f)
    assert info["file"] == "model.int8.onnx" and info["file_size_bytes"] == os.path.getsize(os.path.join(out, "model.int8.onnx"))
    q = info["quantization"]
    assert q["float_file"] == "model.onnx" and q["float_file_size_bytes"] > 2 * info["file_size_bytes"]
    assert q["calibration"]["images"] == 2 and q["nodes"]["int8"] > 20 and len(q["float_nodes_excluded"]) == 13
    assert info["check"]["passed"]  # the float file against PyTorch, as for every ONNX export
    ap = info["int8_check"]
    assert ap["checked"] and ap["passed"] and ap["dataset"] == "synthetic_doclaynet_val" and ap["images"] == 2
    for key in ("float_ap", "int8_ap", "ap_delta"):
        assert isinstance(ap[key], float) and np.isfinite(ap[key])
    assert ap["ap_delta"] == pytest.approx(ap["int8_ap"] - ap["float_ap"]) and ap["max_ap_drop"] == 1.0
    assert ap["float"]["detections"] > 0 and ap["int8"]["detections"] > 0
    assert os.path.isfile(os.path.join(out, "ap_check", "int8", "coco_instances_results.json"))
    assert "json_file" not in MetadataCatalog.get("synthetic_doclaynet_val").as_dict()  # no global leftover

    # The export folder predicts with the int8 file; int8 detections stay near the float ones.
    page = read_image_rgb(detector[4])
    predictor = Predictor.from_exported(out)
    instances = predictor(page)
    assert len(instances) > 0 and tuple(instances.image_size) == page.shape[:2]
    runner, spec, _ = load_exported(os.path.join(out, "model.onnx"))
    image = preprocess(page, spec)
    assert len(runner(image)) == len(predictor.runner(image)) == 25


def oracle_runners(spec: ModelSpec, dataset: str):
    """(perfect runner: the ground truth of each check page in turn, empty runner)."""
    from dla_kd.export.calibration import dataset_records

    truths = []
    for record in dataset_records(dataset, 2):
        boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in record["annotations"]])
        truths.append((boxes, [a["category_id"] for a in record["annotations"]], record["height"]))
    pending = iter(truths)

    def perfect(image):
        boxes, classes, height = next(pending)
        scale = image.shape[1] / height
        return Instances(tuple(image.shape[1:]), pred_boxes=Boxes(torch.tensor(boxes * scale, dtype=torch.float32)),
                         scores=torch.ones(len(classes)), pred_classes=torch.tensor(classes))

    def empty(image):
        return Instances(tuple(image.shape[1:]), pred_boxes=Boxes(torch.zeros(0, 4)), scores=torch.zeros(0),
                         pred_classes=torch.zeros(0, dtype=torch.int64))

    return perfect, empty


def test_ap_check_scores_detections_with_coco_ap(use_synthetic_root, tmp_path):
    spec = ModelSpec.from_cfg(load_config(TINY, MICRO))
    check = APCheck("synthetic_doclaynet_val", images=2, max_ap_drop=1.0)
    perfect, empty = oracle_runners(spec, check.dataset)
    result = check.run(perfect, empty, spec, str(tmp_path))
    assert result["float_ap"] == pytest.approx(100.0) and result["int8_ap"] == 0.0
    assert result["ap_delta"] == pytest.approx(-100.0) and result["passed"] is False
    perfect, _ = oracle_runners(spec, check.dataset)
    assert APCheck(check.dataset, 2, max_ap_drop=101.0).run(empty, perfect, spec, str(tmp_path))["passed"] is True


def fake_export(info_check, int8_check, quantization=None):
    info = {"format": "onnx", "file_size_bytes": 1, "student": {"parameters": 1}, "check": info_check,
            "quantization": quantization or {}}
    if int8_check is not None:
        info["int8_check"] = int8_check
    return lambda *args, **kwargs: ExportResult("model.int8.onnx", "c.yaml", "export_info.json", info, [])


@pytest.mark.parametrize("int8_check, status, message", [
    ({"checked": True, "passed": False, "dataset": "d", "images": 2, "int8_ap": 10.0, "float_ap": 12.5,
      "ap_delta": -2.5, "max_ap_drop": 1.0}, 1, "loses more AP than --max-ap-drop"),
    ({"checked": True, "passed": True, "dataset": "d", "images": 2, "int8_ap": 12.0, "float_ap": 12.5,
      "ap_delta": -0.5, "max_ap_drop": 1.0}, 0, "int8 check ok"),
    ({"checked": False, "passed": None, "reason": "AP not checked: no --check-dataset"}, 0, "AP not checked"),
])
def test_export_tool_exit_status_of_the_ap_check(detector, capsys, int8_check, status, message):
    _, config, weights, calibration, _ = detector
    tool = load_tool("export_model")
    tool.export_model = fake_export({"passed": True, "pages": []}, int8_check)
    assert tool.main(["--config-file", config, "--format", "onnx", "--output", "unused", "--quantize", "int8",
                      "--calibration", calibration, "MODEL.WEIGHTS", weights]) == status
    captured = capsys.readouterr()
    assert message in captured.out + captured.err
    assert "hint" not in captured.err  # no CPU record: nothing to suggest


@pytest.mark.parametrize("cpu, reduce_range, hinted", [
    ({"avx2": True, "vnni": False}, False, True),
    ({"avx2": True, "vnni": False}, True, False),  # already 7-bit weights
    ({"avx2": True, "vnni": True}, False, False),  # VNNI accumulates in 32 bits
    (None, False, False),  # CPU unknown
])
def test_failed_ap_check_suggests_reduce_range_on_cpus_without_vnni(detector, capsys, cpu, reduce_range, hinted):
    _, config, weights, calibration, _ = detector
    tool = load_tool("export_model")
    failed = {"checked": True, "passed": False, "dataset": "d", "images": 2, "int8_ap": 10.0, "float_ap": 12.5,
              "ap_delta": -2.5, "max_ap_drop": 1.0}
    tool.export_model = fake_export({"passed": True, "pages": []}, failed, {"cpu": cpu, "reduce_range": reduce_range})
    assert tool.main(["--config-file", config, "--format", "onnx", "--output", "unused", "--quantize", "int8",
                      "--calibration", calibration, "MODEL.WEIGHTS", weights]) == 1
    err = capsys.readouterr().err
    assert ("hint: this CPU has no VNNI" in err and "--reduce-range" in err) is hinted


def test_int8_usage_errors_exit_2(detector, capsys):
    _, config, weights, calibration, _ = detector
    export = tool_main("export_model")
    common = ["--config-file", config, "--output", os.path.join(detector[0], "bad"), "MODEL.WEIGHTS", weights]
    with pytest.raises(SystemExit) as e:  # usage: int8 is onnxruntime's
        export(["--format", "torchscript", "--quantize", "int8", "--calibration", calibration] + common)
    assert e.value.code == 2 and "--format onnx" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        export(["--format", "onnx", "--quantize", "int8"] + common)
    assert e.value.code == 2 and "--calibration" in capsys.readouterr().err
    assert export(["--format", "onnx", "--quantize", "int8", "--calibration", "no_such_dataset"] + common) == 2
    assert "'no_such_dataset' is neither a folder nor a registered dataset" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(detector[0], "bad", "model.onnx"))


def test_budget_presets_cap_and_overrides_set():
    cfg = load_config(TINY, MICRO + ["MODEL.RPN.POST_NMS_TOPK_TEST", "1000"])
    fast = Budget("fast").apply(cfg)
    assert (fast.MODEL.RPN.POST_NMS_TOPK_TEST, fast.TEST.DETECTIONS_PER_IMAGE) == (300, 50)
    small = Budget("fast").apply(load_config(TINY, MICRO))  # 64 proposals: fast does not raise it
    assert small.MODEL.RPN.POST_NMS_TOPK_TEST == 64
    explicit = Budget("fast", ["TEST.DETECTIONS_PER_IMAGE", "80", "INPUT.MIN_SIZE_TEST", "96"]).apply(cfg)
    assert (explicit.TEST.DETECTIONS_PER_IMAGE, explicit.INPUT.MIN_SIZE_TEST) == (80, 96)
    assert Budget().apply(cfg).dump() == cfg.dump()  # accurate: the config's own values
    with pytest.raises(ValueError, match="MODEL.WEIGHTS"):
        Budget("fast", ["MODEL.WEIGHTS", "x.pth"])


def test_budget_reaches_a_simkd_student(tmp_path):
    """SimKD students copy the teacher's RPN/ROI settings: the budget applies after that copy."""
    teacher = write_config(str(tmp_path / "teacher.yaml"), TINY, ["MODEL.FPN.OUT_CHANNELS", "64"])
    overrides = ["MODEL.RPN.POST_NMS_TOPK_TEST", "7", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.3"]
    cfg = distill_cfg(teacher, ["simkd"], opts=overrides)
    plain = deployable_cfg(cfg)
    assert plain.MODEL.RPN.POST_NMS_TOPK_TEST == 64  # the teacher's, whatever the command line said
    budgeted = Budget("accurate", overrides).apply(plain)
    assert (budgeted.MODEL.RPN.POST_NMS_TOPK_TEST, budgeted.MODEL.ROI_HEADS.SCORE_THRESH_TEST) == (7, 0.3)


def test_budget_changes_the_exported_graph_and_the_test_size(detector, int8_export):
    """Fewer proposals traced in: at most (proposals x classes) detections; the export's test size
    is the one every predictor of it resizes pages to."""
    folder, config, weights, calibration, page_path = detector
    out = os.path.join(folder, "fast")
    assert tool_main("export_model")([
        "--config-file", config, "--format", "onnx", "--output", out, "--budget", "fast", "--quantize", "int8",
        "--calibration", calibration, "--calibration-images", "1", "--no-check",
        "MODEL.WEIGHTS", weights, "MODEL.RPN.POST_NMS_TOPK_TEST", "2", "TEST.DETECTIONS_PER_IMAGE", "100",
        "INPUT.MIN_SIZE_TEST", "96"]) == 0
    info = json.load(open(os.path.join(out, "export_info.json")))
    assert info["budget"]["preset"] == "fast" and info["budget"]["in_graph"] == {
        "MODEL.RPN.POST_NMS_TOPK_TEST": 2, "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0, "TEST.DETECTIONS_PER_IMAGE": 100}
    assert info["budget"]["caller_side"]["INPUT.MIN_SIZE_TEST"] == info["input"]["min_size_test"] == 96
    assert info["int8_check"]["checked"] is False and "checks disabled" in info["int8_check"]["reason"]
    default = json.load(open(os.path.join(int8_export[0], "export_info.json")))["budget"]
    assert default["preset"] == "accurate" and default["in_graph"]["MODEL.RPN.POST_NMS_TOPK_TEST"] == 64

    page = read_image_rgb(page_path)
    num_classes = len(info["class_names"])
    for name in ("model.onnx", "model.int8.onnx"):
        runner, spec, _ = load_exported(os.path.join(out, name))
        image = preprocess(page, spec)
        assert min(image.shape[1:]) == 96
        raw = runner(image)
        assert 0 < len(raw) <= 2 * num_classes < 25  # the 64-proposal export gives 25 (its top-k)
    fed = []
    predictor = Predictor.from_exported(out)
    runner = predictor.runner
    predictor.runner = lambda image: fed.append(tuple(image.shape)) or runner(image)
    predictor(page)
    assert fed and min(fed[0][1:]) == 96


def test_predict_budget_for_checkpoints_only(detector, tmp_path, capsys):
    folder, config, weights, _, page_path = detector
    budget = Budget("fast", ["TEST.DETECTIONS_PER_IMAGE", "3", "INPUT.MIN_SIZE_TEST", "100"])
    predictor = Predictor.from_checkpoint(config, weights, budget=budget)
    assert (predictor.spec.detections_per_image, predictor.spec.min_size_test) == (3, 100)
    assert 0 < len(predictor(read_image_rgb(page_path))) <= 3
    out = str(tmp_path / "pred")
    assert tool_main("predict")(["--config-file", config, "--input", page_path, "--output", out, "--budget", "fast",
                                 "--no-vis", "--no-progress", "MODEL.WEIGHTS", weights,
                                 "TEST.DETECTIONS_PER_IMAGE", "2"]) == 0
    record = json.load(open(os.path.join(out, "page0.json")))
    assert 0 < len(record["detections"]) <= 2
    with pytest.raises(SystemExit) as e:
        tool_main("predict")(["--exported", os.path.join(folder, "onnx_int8"), "--input", page_path, "--output", out,
                              "--budget", "fast"])
    assert e.value.code == 2 and "keeps the budget it was exported with" in capsys.readouterr().err
