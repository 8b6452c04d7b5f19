"""tools/export_model.py and dla_kd.export on tiny random-init models: TorchScript and ONNX
(onnxruntime) round trips for Mask R-CNN and Cascade with the PyTorch detections, pages without
detections in onnxruntime, ONNX opsets that cannot express ROIAlignV2, the student alone out of a
distillation checkpoint (no teacher tensor, SimKD projector and reused heads in), clear errors."""
import copy
import json
import os

import numpy as np
import onnx
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Instances

from dla_kd import Predictor
from dla_kd.data.categories import DOCLAYNET_CATEGORIES
from dla_kd.engine import load_config
from dla_kd.export import TorchRunner, build_deployable_model, compare_detections, load_exported, preprocess
from dla_kd.inference.samples import read_image_rgb
from tiny_models import MICRO, TINY, TINY_CASCADE, distill_cfg, onnx_nodes, save_pages, tool_main, write_config

pytestmark = pytest.mark.usefixtures("one_thread")

ALL_DETECTIONS = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "25"]
OUTPUT_NAMES = ["pred_boxes", "pred_classes", "pred_masks", "scores", "image_size"]


def tiny_detector(folder, base, opts=(), seed=0):
    """(config path, weights path) of a random-init MICRO detector saved like a trained one."""
    config = write_config(os.path.join(folder, "model.yaml"), base, list(opts))
    torch.manual_seed(seed)
    weights = os.path.join(folder, "model.pth")
    torch.save({"model": build_model(load_config(config)).state_dict()}, weights)
    return config, weights


def assert_same_detections(ref, out, box_tol=0.05, score_tol=1e-4):
    """Every reference detection has its own exported twin: same class, score and box."""
    assert len(ref) > 0, "no detections: the comparison would be trivial"
    assert len(out) == len(ref)
    rb, ob = ref.pred_boxes.tensor.numpy(), out.pred_boxes.tensor.numpy()
    twins = set()
    for i in range(len(ref)):
        same_class = np.flatnonzero(out.pred_classes.numpy() == int(ref.pred_classes[i]))
        assert len(same_class), f"class {int(ref.pred_classes[i])} missing"
        j = same_class[np.argmin(np.abs(ob[same_class] - rb[i]).max(1))]
        assert np.abs(ob[j] - rb[i]).max() <= box_tol, (rb[i], ob[j])
        assert abs(float(out.scores[j]) - float(ref.scores[i])) <= score_tol
        twins.add(int(j))
    assert len(twins) == len(ref)


@pytest.fixture(scope="module", params=["mask_rcnn", "cascade"])
def exported(request, tmp_path_factory):
    """A tiny detector exported to both formats by the tool: (model, pages, {format: folder})."""
    folder = str(tmp_path_factory.mktemp(request.param))
    config, weights = tiny_detector(folder, TINY if request.param == "mask_rcnn" else TINY_CASCADE, ALL_DETECTIONS)
    pages = save_pages(folder, [(200, 150), (120, 260), (300, 300)])
    export = tool_main("export_model")
    dirs = {}
    for fmt in ("torchscript", "onnx"):
        dirs[fmt] = os.path.join(folder, fmt)
        status = export(["--config-file", config, "--format", fmt, "--output", dirs[fmt],
                         "--sample-image", pages[0], "MODEL.WEIGHTS", weights])
        assert status == 0
    _, model = build_deployable_model(load_config(config), weights)
    return request.param, model, pages, dirs


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_round_trip(exported, fmt):
    arch, model, pages, dirs = exported
    folder = dirs[fmt]
    assert sorted(os.listdir(folder)) == sorted(["export_info.json", "student_config.yaml",
                                                 "model.ts" if fmt == "torchscript" else "model.onnx"])
    with open(os.path.join(folder, "export_info.json")) as f:
        info = json.load(f)
    assert info["format"] == fmt and info["file_size_bytes"] == os.path.getsize(os.path.join(folder, info["file"]))
    assert info["architecture"]["roi_heads"] == ("CascadeROIHeads" if arch == "cascade" else "StandardROIHeads")
    assert info["input"]["format"] == "BGR" and info["input"]["normalization_in_graph"] is True
    assert info["input"]["pixel_mean"] == pytest.approx([103.53, 116.28, 123.675])
    assert info["class_names"] == [c["name"] for c in DOCLAYNET_CATEGORIES]
    assert [o["name"] for o in info["outputs"]] == OUTPUT_NAMES
    assert {"torch", "detectron2", "onnxruntime"} <= set(info["versions"])
    assert info["check"]["passed"] and len(info["check"]["pages"]) == 1
    assert info["check"]["pages"][0]["n_reference"] == info["check"]["pages"][0]["n_matched"] > 0
    assert load_config(os.path.join(folder, "student_config.yaml")).MODEL.META_ARCHITECTURE == "GeneralizedRCNN"

    # Independently of the tool's check: a page of another size than the traced one.
    runner, spec, _ = load_exported(os.path.join(folder, info["file"]))
    image = preprocess(read_image_rgb(pages[2]), spec)
    ref, out = TorchRunner(model)(image), runner(image)
    assert tuple(out.image_size) == tuple(ref.image_size) == tuple(image.shape[1:])
    assert_same_detections(ref, out)
    assert out.pred_masks.shape == ref.pred_masks.shape
    assert (out.pred_masks - ref.pred_masks).abs().max() < 1e-3


def test_onnx_graph_holds_nms_and_half_pixel_roialign(exported):
    _, _, _, dirs = exported
    graph = onnx.load(os.path.join(dirs["onnx"], "model.onnx")).graph
    nodes = list(onnx_nodes(graph))
    assert {"NonMaxSuppression", "RoiAlign", "Sigmoid"} <= {n.op_type for n in nodes}  # NMS inside If (empty case)
    modes = {a.s.decode() for n in nodes if n.op_type == "RoiAlign" for a in n.attribute
             if a.name == "coordinate_transformation_mode"}
    assert modes == {"half_pixel"}  # ROIAlignV2 (aligned=True), exact only from opset 16
    assert [o.name for o in graph.output] == OUTPUT_NAMES


def test_predictor_gives_the_same_json_for_every_backend(exported):
    _, model, pages, dirs = exported
    checkpoint = Predictor(TorchRunner(model), load_exported(dirs["onnx"])[1])
    page = read_image_rgb(pages[1])
    records = [p.record(p(page), pages[1], output_format="rle") for p in
               (checkpoint, Predictor.from_exported(dirs["torchscript"]), Predictor.from_exported(dirs["onnx"]))]
    assert [r["backend"] for r in records] == ["pytorch", "torchscript", "onnx"]
    ref = records[0]
    assert len(ref["detections"]) > 0
    for rec in records[1:]:
        assert set(rec) == set(ref) and (rec["height"], rec["width"]) == (ref["height"], ref["width"])
        assert len(rec["detections"]) == len(ref["detections"])
        for a, b in zip(sorted(ref["detections"], key=lambda d: d["bbox"]), sorted(rec["detections"], key=lambda d: d["bbox"])):
            assert set(a) == set(b) and a["category_id"] == b["category_id"]
            assert np.allclose(a["bbox"], b["bbox"], atol=0.1) and abs(a["score"] - b["score"]) < 1e-4
            assert a["segmentation"]["size"] == b["segmentation"]["size"]


def test_onnx_runs_pages_without_detections(tmp_path):
    """GroupNorm mask head with zero boxes: torch's symbolic reshapes to (0, G, -1), which
    onnxruntime rejects; dla_kd's symbolic makes it run (and the check compares the empty outputs)."""
    config, weights = tiny_detector(str(tmp_path), TINY, ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "1.0"])
    pages = save_pages(str(tmp_path), [(128, 160), (150, 120)])
    out = str(tmp_path / "onnx")
    assert tool_main("export_model")(["--config-file", config, "--format", "onnx", "--output", out,
                                      "--sample-image", pages[0], "MODEL.WEIGHTS", weights]) == 0
    info = json.load(open(os.path.join(out, "export_info.json")))
    assert info["check"]["passed"] and [p["n_exported"] for p in info["check"]["pages"]] == [0]
    runner, spec, _ = load_exported(out)
    raw = runner(preprocess(read_image_rgb(pages[1]), spec))
    assert len(raw) == 0 and tuple(raw.pred_masks.shape[1:]) == (1, 28, 28)


def test_scripting_exports_mask_rcnn_and_reports_cascade(tmp_path, capsys):
    mask, cascade = tmp_path / "mask", tmp_path / "cascade"
    mask.mkdir(), cascade.mkdir()
    config, weights = tiny_detector(str(mask), TINY, ALL_DETECTIONS)
    pages = save_pages(str(tmp_path), [(128, 160), (170, 110)])
    out = str(tmp_path / "scripted")
    export = tool_main("export_model")
    assert export(["--config-file", config, "--format", "torchscript-script", "--output", out,
                   "--sample-image", pages[0], "MODEL.WEIGHTS", weights]) == 0
    info = json.load(open(os.path.join(out, "export_info.json")))
    assert info["check"]["passed"] and info["export_method"].startswith("scripting")
    runner, spec, _ = load_exported(out)
    image = preprocess(read_image_rgb(pages[1]), spec)
    _, model = build_deployable_model(load_config(config), weights)
    assert_same_detections(TorchRunner(model)(image), runner(image))

    config, weights = tiny_detector(str(cascade), TINY_CASCADE)
    assert export(["--config-file", config, "--format", "torchscript-script", "--output", str(tmp_path / "c"),
                   "MODEL.WEIGHTS", weights]) == 2
    err = capsys.readouterr().err
    assert "scripting of CascadeROIHeads failed" in err and "--format torchscript" in err


def test_onnx_opset_without_half_pixel_roialign_is_refused(tmp_path, capsys):
    config, weights = tiny_detector(str(tmp_path), TINY)
    out = str(tmp_path / "onnx")
    status = tool_main("export_model")(["--config-file", config, "--format", "onnx", "--output", out,
                                        "--opset", "11", "MODEL.WEIGHTS", weights])
    assert status == 2
    err = capsys.readouterr().err
    assert "opset 11" in err and "ROIAlignV2" in err and "--opset 16" in err
    assert not os.path.exists(os.path.join(out, "model.onnx"))


def test_check_tells_different_models_apart():
    torch.manual_seed(0)
    a = build_model(load_config(TINY, MICRO + ALL_DETECTIONS)).eval()
    b = copy.deepcopy(a)
    with torch.no_grad():
        b.roi_heads.box_predictor.bbox_pred.weight.add_(0.01)  # the box regression only
    image = torch.randint(0, 256, (3, 128, 160)).float()
    ref = TorchRunner(a)(image)
    assert compare_detections(ref, TorchRunner(a)(image)).ok
    other = compare_detections(ref, TorchRunner(b)(image))
    assert not other.ok and other.n_matched < other.n_reference and other.n_exported == other.n_reference
    moved = Instances(ref.image_size, pred_boxes=ref.pred_boxes.clone(), scores=ref.scores,
                      pred_classes=ref.pred_classes, pred_masks=ref.pred_masks)
    moved.pred_boxes.tensor[0] += 1.0  # one box one pixel off
    assert compare_detections(ref, moved).n_matched == len(ref) - 1


def test_wrong_config_for_the_checkpoint_is_a_clear_error(tmp_path, capsys):
    _, weights = tiny_detector(str(tmp_path), TINY)
    cascade = write_config(str(tmp_path / "cascade.yaml"), TINY_CASCADE)
    status = tool_main("export_model")(["--config-file", cascade, "--format", "torchscript",
                                        "--output", str(tmp_path / "out"), "MODEL.WEIGHTS", weights])
    err = capsys.readouterr().err
    assert status == 2 and "does not match the model" in err and weights in err


def test_distillation_checkpoint_exports_the_student_alone(tmp_path):
    teacher_config, teacher_weights = tiny_detector(str(tmp_path), TINY, ["MODEL.FPN.OUT_CHANNELS", "64"], seed=123)
    cfg = distill_cfg(teacher_config, ["simkd", "fitnet", "mgd"], teacher_weights=teacher_weights, opts=ALL_DETECTIONS)
    distill = build_model(cfg).eval()
    checkpoint = str(tmp_path / "distill.pth")
    state = distill.state_dict()
    assert any(k.startswith("distillers.mgd.") for k in state)  # training-only tensors are in the file
    torch.save({"model": state}, checkpoint)
    config = str(tmp_path / "distill.yaml")
    with open(config, "w") as f:
        f.write(cfg.dump())
    pages = save_pages(str(tmp_path), [(128, 160)])
    out = str(tmp_path / "ts")
    assert tool_main("export_model")(["--config-file", config, "--format", "torchscript", "--output", out,
                                      "--sample-image", *pages, "MODEL.WEIGHTS", checkpoint]) == 0
    info = json.load(open(os.path.join(out, "export_info.json")))
    # The check ran the distillation checkpoint's student in PyTorch against the exported file.
    assert info["check"]["passed"] and info["check"]["pages"][0]["n_reference"] > 0
    assert info["source"]["distillation_config"] and info["architecture"]["simkd_projector"]

    traced = torch.jit.load(os.path.join(out, "model.ts"))
    tensors = {**dict(traced.named_parameters()), **dict(traced.named_buffers())}
    student = distill.student
    expected = {f"model.{k}" for k, _ in [*student.named_parameters(), *student.named_buffers()]}
    assert set(tensors) == expected and len(tensors) == info["student"]["tensors"]
    assert not any("teacher" in k or "distillers" in k or "adapters" in k for k in tensors)
    assert any(k.startswith("model.backbone.projector.") for k in tensors)  # SimKD projector
    teacher = distill.teacher
    for k, v in teacher.backbone.state_dict().items():
        if v.dim() == 4:  # random conv weights: none of the teacher's backbone is in the file
            assert not any(t.shape == v.shape and torch.equal(t, v) for t in tensors.values()), k
    for k, v in teacher.roi_heads.state_dict().items():  # SimKD reuses the teacher's heads
        assert torch.equal(tensors[f"model.roi_heads.{k}"], v), k

    # Predicting from the distillation checkpoint is predicting with its exported student.
    page = read_image_rgb(pages[0])
    assert_same_detections(Predictor.from_config(cfg, checkpoint)(page), Predictor.from_exported(out)(page), box_tol=0.1)
