"""tools/predict.py and dla_kd.Predictor on a tiny random-init model: JSON (schema, boxes inside
the page) and PNG (page size) for images, folders and PDF pages, the same output from an exported
model, bad files reported while the others are processed, a config not matching the checkpoint,
category colours in the pictures."""
import json
import os

import numpy as np
import pypdfium2 as pdfium
import pytest
import torch
from detectron2.structures import Boxes, Instances
from PIL import Image

import dla_kd
from dla_kd import Predictor
from dla_kd.data.categories import DOCLAYNET_CATEGORIES
from dla_kd.engine import load_config
from dla_kd.export import ModelSpec
from dla_kd.predict.visualize import draw_detections
from tiny_models import MICRO, TINY, TINY_CASCADE, make_pdf, save_pages, tool_main, write_config

pytestmark = pytest.mark.usefixtures("one_thread")

DOCLAYNET = {c["id"]: c["name"] for c in DOCLAYNET_CATEGORIES}


def check_record(record, height, width, page=None, dpi=None):
    """The JSON schema of dla_kd/predict/records.py, boxes and polygons inside the page."""
    assert set(record) == {"file_name", "page", "dpi", "height", "width", "backend", "categories", "detections"}
    assert (record["height"], record["width"], record["page"], record["dpi"]) == (height, width, page, dpi)
    assert {c["id"]: c["name"] for c in record["categories"]} == DOCLAYNET
    assert len(record["detections"]) > 0
    scores = [d["score"] for d in record["detections"]]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    for k, d in enumerate(record["detections"], 1):
        assert set(d) == {"id", "category_id", "category_name", "bbox", "score", "area", "segmentation"}
        assert d["id"] == k and DOCLAYNET[d["category_id"]] == d["category_name"]
        x, y, w, h = d["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0
        assert x + w <= width + 1e-3 and y + h <= height + 1e-3
        assert isinstance(d["segmentation"], list)
        for polygon in d["segmentation"]:
            assert len(polygon) >= 6 and len(polygon) % 2 == 0
            xs, ys = np.array(polygon[0::2]), np.array(polygon[1::2])
            assert xs.min() >= -1 and ys.min() >= -1 and xs.max() <= width and ys.max() <= height


def test_images_folders_and_pdf_pages_to_json_and_png(detector, tmp_path):
    config, weights, _ = detector
    single = save_pages(str(tmp_path), [(210, 160)])[0]
    folder = tmp_path / "folder"
    folder.mkdir()
    os.rename(save_pages(str(folder), [(140, 180)], seed=3)[0], folder / "scan.png")
    pdf = make_pdf(str(folder / "doc.pdf"), [(150, 100), (90, 160)])
    assert len(pdfium.PdfDocument(pdf)) == 2

    out = str(tmp_path / "out")
    status = tool_main("predict")(["--config-file", config, "--input", single, str(folder), "--output", out,
                                   "--dpi", "144", "--output-format", "polygons", "--no-progress",
                                   "MODEL.WEIGHTS", weights])
    assert status == 0
    # name -> (height, width, page, dpi): PDF pages rendered at 144 dpi are twice their point size
    expected = {"page0": (210, 160, None, None), "scan": (140, 180, None, None),
                "doc_p0001": (300, 200, 1, 144.0), "doc_p0002": (180, 320, 2, 144.0)}
    assert sorted(os.listdir(out)) == sorted([f"{n}.{e}" for n in expected for e in ("json", "png")] + ["summary.json"])
    for name, (h, w, page, dpi) in expected.items():
        with open(os.path.join(out, f"{name}.json")) as f:
            record = json.load(f)
        check_record(record, h, w, page, dpi)
        assert record["backend"] == "pytorch" and record["file_name"].endswith((".png", ".pdf"))
        picture = Image.open(os.path.join(out, f"{name}.png"))
        assert picture.size == (w, h) and picture.mode == "RGB"
    assert json.load(open(os.path.join(out, "summary.json")))["failures"] == []


def test_exported_model_writes_the_same_json(detector, tmp_path):
    config, weights, exported = detector
    page = save_pages(str(tmp_path), [(170, 130)])[0]
    out = str(tmp_path / "out")
    assert tool_main("predict")(["--exported", exported, "--input", page, "--output", out, "--no-vis",
                                 "--output-format", "rle", "--no-progress"]) == 0
    record = json.load(open(os.path.join(out, "page0.json")))
    checkpoint = Predictor.from_checkpoint(config, weights)
    image = np.asarray(Image.open(page).convert("RGB"))
    reference = checkpoint.record(checkpoint(image), os.path.abspath(page), output_format="rle")
    assert record["backend"] == "torchscript" and reference["backend"] == "pytorch"
    assert {k: v for k, v in record.items() if k not in ("backend", "detections")} == \
           {k: v for k, v in reference.items() if k not in ("backend", "detections")}
    assert len(record["detections"]) == len(reference["detections"]) > 0
    for a, b in zip(reference["detections"], record["detections"]):
        assert a["category_id"] == b["category_id"] and abs(a["score"] - b["score"]) < 1e-5
        assert np.allclose(a["bbox"], b["bbox"], atol=0.01) and a["segmentation"] == b["segmentation"]


def test_bad_files_are_reported_and_the_others_processed(detector, tmp_path, capsys):
    config, weights, _ = detector
    good = save_pages(str(tmp_path), [(120, 150)])[0]
    unreadable = tmp_path / "broken.png"
    unreadable.write_bytes(b"\x89PNG not really")
    corrupt = tmp_path / "corrupt.pdf"
    corrupt.write_bytes(b"%PDF-1.4\n garbage")
    empty = str(tmp_path / "empty.pdf")
    pdfium.PdfDocument.new().save(empty)  # a document without pages
    (tmp_path / "nothing_here").mkdir()
    missing = str(tmp_path / "missing.png")
    bad = {str(unreadable): "unreadable image", str(corrupt): "corrupt or unreadable PDF",
           empty: "PDF has no pages", str(tmp_path / "nothing_here"): "no images or PDFs",
           missing: "no such file"}

    out = str(tmp_path / "out")
    status = tool_main("predict")(["--config-file", config, "--input", str(unreadable), good, str(corrupt), empty,
                                   str(tmp_path / "nothing_here"), missing, "--output", out, "--no-vis",
                                   "--no-progress", "MODEL.WEIGHTS", weights])
    assert status == 1
    assert os.path.isfile(os.path.join(out, "page0.json"))  # the good page, after a bad one
    err = capsys.readouterr().err
    assert f"{len(bad)} failed" in err
    for path, reason in bad.items():
        assert any(path in line and reason in line for line in err.splitlines()), (path, err)
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert sorted(f["path"] for f in summary["failures"]) == sorted(bad)
    assert [os.path.basename(p) for p in summary["written"]] == ["page0.json"]


def test_config_not_matching_the_checkpoint_is_a_clear_error(detector, tmp_path, capsys):
    _, weights, _ = detector
    cascade = write_config(str(tmp_path / "cascade.yaml"), TINY_CASCADE)
    page = save_pages(str(tmp_path), [(100, 100)])[0]
    status = tool_main("predict")(["--config-file", cascade, "--input", page, "--output", str(tmp_path / "out"),
                                   "--no-progress", "MODEL.WEIGHTS", weights])
    err = capsys.readouterr().err
    assert status == 2 and "cannot load the model" in err and "does not match the model" in err and weights in err
    assert not os.path.exists(str(tmp_path / "out" / "page0.json"))


def test_predictor_api_and_score_filter(detector, tmp_path):
    config, weights, _ = detector
    assert dla_kd.Predictor is Predictor
    predictor = Predictor.from_checkpoint(config, weights)
    image = np.asarray(Image.open(save_pages(str(tmp_path), [(130, 170)])[0]))
    instances = predictor(image)
    assert len(instances) > 0 and tuple(instances.image_size) == (130, 170)
    assert len(instances.pred_masks) == len(instances)  # pasted one at a time: PageMasks, not (N, H, W)
    mask = instances.pred_masks.paste(0)
    assert mask.shape == (130, 170) and mask.dtype == bool
    strict = Predictor(predictor.runner, predictor.spec, min_score=1.01)
    none = strict(image)
    assert len(none) == 0 and strict.record(none, "x.png")["detections"] == []
    assert strict.visualize(image, none).shape == image.shape


def test_threads_set_torchs_threads_for_a_checkpoint(detector, tmp_path, monkeypatch):
    """--threads reaches torch when the model is a checkpoint (onnxruntime's for an export)."""
    config, weights, _ = detector
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    page = save_pages(str(tmp_path), [(90, 120)])[0]
    assert tool_main("predict")(["--config-file", config, "--input", page, "--output", str(tmp_path / "out"),
                                 "--threads", "1", "--no-progress", "--no-vis", "MODEL.WEIGHTS", weights]) == 0
    assert calls == [1]


def test_pictures_colour_boxes_by_category():
    spec = ModelSpec.from_cfg(load_config(TINY, MICRO))
    assert [c.color for c in spec.categories] == [c["color"] for c in DOCLAYNET_CATEGORIES]
    page = np.full((300, 300, 3), 255, np.uint8)
    boxes = [[40, 40, 140, 260], [170, 40, 270, 260]]
    table, text = [k for k, c in enumerate(DOCLAYNET_CATEGORIES) if c["name"] in ("Table", "Text")]
    inst = Instances((300, 300), pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
                     scores=torch.tensor([0.9, 0.8]), pred_classes=torch.tensor([table, text]))
    picture = draw_detections(page, inst, spec)
    assert picture.shape == page.shape and picture.dtype == np.uint8
    for (x0, y0, x1, y1), k in zip(boxes, (table, text)):
        edge = picture[(y0 + y1) // 2, x0 - 3:x0 + 4].astype(float)  # across the left edge, mid-height
        darkest = edge[np.argmax(np.abs(edge - 255).sum(1))]
        blended = {i: 0.5 * np.array(c["color"]) + 0.5 * 255 for i, c in enumerate(DOCLAYNET_CATEGORIES)}
        assert min(blended, key=lambda i: np.abs(blended[i] - darkest).sum()) == k, darkest


@pytest.mark.parametrize("tool", ["predict", "pseudo_label"])
def test_command_line_refuses_what_an_exported_model_cannot_take(tool, tmp_path, capsys):
    """Both tools share their model/page arguments: no page, or config overrides (predict: also
    --budget) for an exported model, stop with a usage error before anything is loaded."""
    page = str(tmp_path / "page.png")
    Image.new("RGB", (64, 64), "white").save(page)
    out = str(tmp_path / "out")
    cases = [
        (["--exported", "missing.onnx", "--input", "MODEL.WEIGHTS", "m.pth", "--output", out], "--input needs at least one"),
        (["--exported", "missing.onnx", "--input", page, "MODEL.WEIGHTS", "m.pth", "--output", out],
         "config overrides apply to --config-file checkpoints"),
    ]
    if tool == "predict":
        cases.append((["--exported", "missing.onnx", "--input", page, "--output", out, "--budget", "fast"],
                      "--budget apply to --config-file checkpoints, not to --exported models: an export keeps"))
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            tool_main(tool)(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not os.path.exists(out)
