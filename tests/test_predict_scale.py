"""Predicting at scale: several pages per forward (the same detections as one page at a time),
pages loaded in worker processes, pages/s reported, compact output formats (RLE decoding to the
masks, boxes without masks), masks pasted one detection at a time into its box region (the same
pixels as Detectron2's page-sized paste, never an (N, H, W) tensor)."""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.layers import mask_ops
from detectron2.structures import Boxes, Instances
from detectron2.utils.visualizer import GenericMask
from PIL import Image

import dla_kd.inference.masks
from dla_kd import Predictor
from dla_kd.engine import load_config
from dla_kd.export import ModelSpec
from dla_kd.inference.masks import PageMasks
from dla_kd.predict.segmentation import crop_polygons, crop_rle, simplify_polygon
from dla_kd.utils.benchmark import reset_peak_rss, rss_mb
from tiny_models import MICRO, TINY, make_pdf, save_pages, tool_main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def predictor(detector):
    config, weights, _ = detector
    return Predictor.from_checkpoint(config, weights)


def assert_same_detections(a: Instances, b: Instances):
    assert len(a) == len(b) > 0 and torch.equal(a.pred_classes, b.pred_classes)
    assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-3)
    assert torch.allclose(a.scores, b.scores, atol=1e-5)
    assert torch.allclose(a.pred_masks.probs, b.pred_masks.probs, atol=1e-4)


def test_batch_forward_gives_the_same_detections_as_one_by_one(predictor, detector, tmp_path, monkeypatch):
    pages = [np.asarray(Image.open(p)) for p in save_pages(str(tmp_path), [(150, 120)] * 3 + [(120, 170)])]
    forwards, batch = [], predictor.runner.batch
    monkeypatch.setattr(predictor.runner, "batch", lambda images: forwards.append(len(images)) or batch(images))
    batched = predictor.predict_batch(pages)
    assert predictor.batch_forward and forwards == [3]  # one forward for the pages of one size; the other alone
    for page, instances in zip(pages, batched):
        assert_same_detections(instances, predictor(page))
    exported = Predictor.from_exported(detector[2])  # a traced graph takes one image: one call per page
    assert not exported.batch_forward
    for reference, instances in zip(batched, exported.predict_batch(pages)):
        assert_same_detections(reference, instances)


def test_tool_batches_renders_in_workers_and_reports_pages_per_second(detector, tmp_path, capsys):
    config, weights, _ = detector
    folder = tmp_path / "in"
    folder.mkdir()
    save_pages(str(folder), [(140, 110)] * 2)
    make_pdf(str(folder / "doc.pdf"), [(140, 110), (90, 160), (140, 110)])
    runs = {"batched": ["--batch-size", "3", "--workers", "2"], "one_by_one": ["--batch-size", "1", "--workers", "0"]}
    for name, options in runs.items():
        assert tool_main("predict")(["--config-file", config, "--input", str(folder), "--output", str(tmp_path / name),
                                     "--no-vis", "--no-progress", *options, "MODEL.WEIGHTS", weights]) == 0
    assert "up to 3 pages per forward" in capsys.readouterr().out.splitlines()[0]
    summary = json.load(open(tmp_path / "batched" / "summary.json"))
    assert summary["pages"] == 5 and summary["pages_per_second"] > 0 and summary["seconds"] > 0
    assert (summary["batch_size"], summary["workers"], summary["output_format"]) == (3, 2, "rle")
    for path in summary["written"]:
        batched = json.load(open(path))
        alone = json.load(open(tmp_path / "one_by_one" / os.path.basename(path)))
        assert (batched["height"], batched["width"]) == (alone["height"], alone["width"])
        assert [d["category_id"] for d in batched["detections"]] == [d["category_id"] for d in alone["detections"]]
        for a, b in zip(batched["detections"], alone["detections"]):
            assert np.allclose(a["bbox"], b["bbox"], atol=0.01) and abs(a["score"] - b["score"]) < 1e-5


def stub_predictor(n: int, seed: int = 0) -> Predictor:
    """A Predictor whose "model" returns ``n`` large boxes on its input (up to 40% of each side)
    with elliptic masks: detections like a trained model's, at no cost."""
    g = torch.Generator().manual_seed(seed)
    t = (torch.arange(28) + 0.5) / 14 - 1  # mask cell centres in [-1, 1]

    def runner(image):
        h, w = image.shape[1:]
        corner = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        size = (0.1 + 0.3 * torch.rand(n, 2, generator=g)) * torch.tensor([w, h])
        centre, radius = 0.3 * (torch.rand(n, 2, 1, 1, generator=g) - 0.5), 0.5 + 0.4 * torch.rand(n, 2, 1, 1, generator=g)
        r2 = ((t[None, None] - centre[:, 0]) / radius[:, 0]) ** 2 + ((t[None, :, None] - centre[:, 1]) / radius[:, 1]) ** 2
        return Instances((h, w), pred_boxes=Boxes(torch.cat([corner, corner + size], 1)),
                         scores=torch.rand(n, generator=g), pred_classes=torch.randint(0, 11, (n,), generator=g),
                         pred_masks=torch.sigmoid(8 * (1 - r2))[:, None])

    runner.backend = "stub"
    return Predictor(runner, ModelSpec.from_cfg(load_config(TINY, MICRO)))


def rasterise(polygons, height, width) -> np.ndarray:
    """(H, W) bool mask of COCO polygons (pycocotools)."""
    if not polygons:
        return np.zeros((height, width), bool)
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, height, width))).astype(bool)


def test_compact_formats_round_trip():
    predictor, (height, width) = stub_predictor(20), (300, 400)
    instances = predictor(np.full((height, width, 3), 255, np.uint8))
    records = {f: predictor.record(instances, "page.png", output_format=f) for f in ("rle", "polygons", "boxes")}
    order = np.argsort(-instances.scores.numpy(), kind="stable")  # records list detections by score
    missed = total = 0
    for k, rle, polygons, box in zip(order, *(records[f]["detections"] for f in ("rle", "polygons", "boxes"))):
        mask = mask_util.decode(rle["segmentation"]).astype(bool)
        assert np.array_equal(mask, instances.pred_masks.paste(int(k))) and rle["area"] == mask.sum() > 0
        missed += (mask ^ rasterise(polygons["segmentation"], height, width)).sum()
        total += mask.sum()
        assert box["segmentation"] is None and box["area"] == pytest.approx(box["bbox"][2] * box["bbox"][3], rel=1e-4)
        assert {n: box[n] for n in ("id", "category_id", "bbox", "score")} == {n: rle[n] for n in ("id", "category_id", "bbox", "score")}
    assert missed <= 0.06 * total  # polygons through pixel centres, rasterised again: the boundary differs
    size = {f: len(json.dumps(r)) for f, r in records.items()}
    assert size["boxes"] < size["rle"] < size["polygons"] / 4


def test_per_detection_paste_equals_detectron2s_page_paste():
    g = torch.Generator().manual_seed(0)
    height, width = 97, 131
    corner = torch.rand(40, 2, generator=g) * torch.tensor([width, height])
    boxes = torch.cat([corner, corner + torch.rand(40, 2, generator=g) * torch.tensor([width, height])], 1)
    boxes = torch.min(boxes, torch.tensor([width, height, width, height], dtype=torch.float32))
    boxes[0] = torch.tensor([3.3, 0.0, 40.7, float(height)])  # runs down whole columns
    probs = torch.rand(40, 28, 28, generator=g)
    probs[0] = 1.0
    pages = mask_ops.paste_masks_in_image(probs, boxes, (height, width)).numpy()
    masks = PageMasks(probs, boxes, (height, width))
    for k, page in enumerate(pages):
        crop, offset = masks.crop(k)
        assert np.array_equal(masks.paste(k), page)
        assert crop_rle(crop, offset, (height, width))["counts"] == mask_util.encode(np.asfortranarray(page.astype(np.uint8)))["counts"].decode()
        expected = GenericMask(page.astype(np.uint8), height, width).polygons
        assert len(crop_polygons(crop, offset)) == len(expected)
        assert all(np.array_equal(a, b) for a, b in zip(crop_polygons(crop, offset), expected))


def test_simplified_polygons_keep_the_mask_with_a_few_points():
    """A traced rectangle (hundreds of contour points) comes back as its 4 corners; an ellipse
    keeps its shape within the tolerance; tolerance 0 changes nothing."""
    height, width = 120, 200
    page = np.zeros((height, width), bool)
    page[20:90, 30:170] = True
    (traced,) = crop_polygons(page, (0, 0))
    assert len(traced) // 2 > 300
    corners = simplify_polygon(traced, 1.0)
    assert len(corners) == 8
    assert (rasterise([corners.tolist()], height, width) ^ page).sum() <= 2 * (70 + 140)  # at most a boundary ring
    assert np.array_equal(simplify_polygon(traced, 0.0), traced)
    yy, xx = np.mgrid[:height, :width]
    ellipse = ((xx - 100) / 80.0) ** 2 + ((yy - 60) / 40.0) ** 2 <= 1
    (traced,) = crop_polygons(ellipse, (0, 0))
    simple = simplify_polygon(traced, 1.0)
    assert 8 < len(simple) < len(traced) / 4
    missed = (rasterise([simple.tolist()], height, width) ^ ellipse).sum()
    assert missed <= 0.05 * ellipse.sum()
    tiny = np.array([5.5, 5.5, 6.5, 5.5, 6.5, 6.5])  # no simpler polygon than itself
    assert np.array_equal(simplify_polygon(tiny, 1.0), tiny)


def test_masks_are_pasted_one_detection_at_a_time(monkeypatch):
    """100 detections on a 1600 x 1200 page: every paste is one mask into its box region, and the
    peak memory stays far below the 192 MB of an (N, H, W) bool tensor."""
    height, width, n = 1600, 1200, 100
    pastes, paste = [], mask_ops.paste_masks_in_image

    def spy(masks, boxes, image_shape, threshold=0.5):
        (x0, y0, x1, y1), (h, w) = boxes[0].tolist(), image_shape
        pastes.append((len(masks), h <= y1 - y0 + 4 and w <= x1 - x0 + 4))
        return paste(masks, boxes, image_shape, threshold)

    monkeypatch.setattr(mask_ops, "paste_masks_in_image", spy)  # Detectron2's page-sized path goes through it
    monkeypatch.setattr(dla_kd.inference.masks, "paste_masks_in_image", spy)
    predictor = stub_predictor(n, seed=1)
    page = np.full((height, width, 3), 255, np.uint8)
    measured = reset_peak_rss()
    before = rss_mb().get("rss_mb", 0.0)
    instances = predictor(page)
    record = predictor.record(instances, "page.png", output_format="rle")
    peak = rss_mb()["peak_rss_mb"]
    assert len(record["detections"]) == n and pastes == [(1, True)] * n
    if measured:
        assert peak - before < n * height * width / 4 / 2**20, (before, peak)
    predictor.visualize(page, instances)
    assert pastes == [(1, True)] * (2 * n)
