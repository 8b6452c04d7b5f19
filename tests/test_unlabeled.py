"""Distillation on unlabeled pages: page sources (folders, PDFs, cache, skipped files), batches
mixing labelled and unlabeled images, the teacher's detections as boxes and pseudo labels, and
offline pseudo-labelling (tools/pseudo_label.py) with its resumable journal and class checks."""
import io
import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from detectron2.structures import BitMasks
from detectron2.utils.events import EventStorage
from PIL import Image, ImageDraw

import dla_kd  # noqa: F401
from dla_kd.data import PseudoLabelMismatchError, register_pseudo_labeled, register_unlabeled_pages
from dla_kd.data import pages as pages_module
from dla_kd.data.mixed_loader import MixedBatchLoader, build_mixed_train_loader, split_batch, uses_unlabeled
from dla_kd.engine import Trainer, load_config
from dla_kd.engine.distill_check import check_distill_section
from dla_kd.predict.pseudo_label import JOURNAL_FILE, LABELS_FILE
from tiny_models import MICRO, TINY, distill_cfg, fake_batch, save_random_weights, tool_main, write_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _page(size=(150, 200), blank=False, seed=0) -> Image.Image:
    """A white (w, h) page with dark text-like bars (or nothing)."""
    image = Image.new("RGB", size, "white")
    if not blank:
        rng = np.random.default_rng(seed)
        draw = ImageDraw.Draw(image)
        for _ in range(8):
            x, y = int(rng.integers(5, size[0] - 60)), int(rng.integers(5, size[1] - 12))
            draw.rectangle([x, y, x + int(rng.integers(20, 55)), y + 6], fill=(20, 20, 20))
    return image


def _pdf(path, pages):
    """A PDF of PIL images (1 px = 1 pt, so 72 dpi renders them at their own size)."""
    pages[0].save(path, format="PDF", save_all=True, append_images=pages[1:], resolution=72)
    return str(path)


def _encrypted_pdf(path):
    """A PDF whose standard security handler wants a password the file does not open with."""
    buf = io.BytesIO()
    _page().save(buf, format="PDF", resolution=72)
    data = buf.getvalue().replace(
        b"trailer\n<<",
        b"trailer\n<<\n/Encrypt << /Filter /Standard /V 1 /R 2 /O <" + b"11" * 32 + b"> /U <" + b"22" * 32
        + b"> /P -4 >>\n/ID [<" + b"33" * 16 + b"> <" + b"33" * 16 + b">]",
    )
    path.write_bytes(data)
    return str(path)


@pytest.fixture
def docs(tmp_path):
    """A folder of pages: 2 usable ones (an image, a PDF page in a sub-folder) and 5 that are not."""
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    _page(seed=1).save(folder / "scan.png")
    _page(blank=True).save(folder / "blank.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    _pdf(folder / "sub" / "report.pdf", [_page((160, 120), seed=2), _page((160, 120), blank=True)])
    _encrypted_pdf(folder / "locked.pdf")
    (folder / "corrupt.pdf").write_bytes(b"%PDF-1.4\ngarbage\n")
    return folder


def test_unlabeled_pages_from_folders_and_pdfs(docs, tmp_path, registered, caplog, monkeypatch):
    cache = tmp_path / "cache"
    register_unlabeled_pages("test_unlabeled_docs", [str(docs)], dpi=72, cache_dir=str(cache))
    registered.append("test_unlabeled_docs")
    with caplog.at_level(logging.WARNING, logger="dla_kd"):
        dicts = DatasetCatalog.get("test_unlabeled_docs")
    assert [(os.path.basename(d["source_file"]), d["page"]) for d in dicts] == [("scan.png", None), ("report.pdf", 1)]
    for d in dicts:
        assert "annotations" not in d
        assert read_image(d["file_name"]).shape[:2] == (d["height"], d["width"])
    assert (dicts[1]["width"], dicts[1]["height"]) == (160, 120) and dicts[1]["file_name"].startswith(str(cache))
    assert len({d["image_id"] for d in dicts}) == 2
    warning = caplog.text
    for expected in ("blank.png: empty page", "broken.png: not a readable image", "report.pdf (page 2): empty page",
                     "locked.pdf: encrypted PDF", "corrupt.pdf: corrupt or unreadable PDF"):
        assert expected in warning, expected
    assert MetadataCatalog.get("test_unlabeled_docs").unlabeled

    # Cached by path, size, mtime and DPI: nothing is decoded or rendered again ...
    monkeypatch.setattr(pages_module, "_pdf_entry", lambda *a: pytest.fail("rendered again"))
    monkeypatch.setattr(pages_module, "_image_entry", lambda *a: pytest.fail("decoded again"))
    assert DatasetCatalog.get("test_unlabeled_docs") == dicts
    # ... unless the file changes.
    _pdf(docs / "sub" / "report.pdf", [_page((160, 120), seed=3)] * 2)
    with pytest.raises(BaseException, match="rendered again"):
        DatasetCatalog.get("test_unlabeled_docs")


def test_mixed_batches_keep_the_ratio_and_aspect_grouping(use_synthetic_root, tmp_path, registered):
    folder = tmp_path / "pages"
    folder.mkdir()
    for k in range(4):  # two landscape, two portrait pages
        _page((200, 150) if k % 2 else (150, 200), seed=k).save(folder / f"p{k}.png")
    register_unlabeled_pages("test_unlabeled_mix", [str(folder)], cache_dir=str(tmp_path / "cache"))
    registered.append("test_unlabeled_mix")
    opts = MICRO + ["DATASETS.UNLABELED", "('test_unlabeled_mix',)", "SOLVER.IMS_PER_BATCH", "4",
                    "MODEL.META_ARCHITECTURE", "DistillGeneralizedRCNN"]
    for ratio, n_unlabeled in (("0.5", 2), ("0.25", 1), ("1.0", 4)):
        cfg = load_config(TINY, opts + ["DISTILL.UNLABELED.RATIO", ratio])
        batches = iter(build_mixed_train_loader(cfg))
        for _ in range(4):
            batch = next(batches)
            assert len(batch) == 4
            assert ["instances" in x for x in batch] == [True] * (4 - n_unlabeled) + [False] * n_unlabeled
            unlabeled = batch[4 - n_unlabeled:]
            if len(unlabeled) > 1:  # Detectron2's aspect-ratio grouping within the unlabeled batch
                assert len({x["width"] > x["height"] for x in unlabeled}) == 1
    assert isinstance(Trainer.build_train_loader(cfg), MixedBatchLoader)  # what training uses
    with pytest.raises(ValueError, match=r"DATASETS.UNLABELED.*not DistillGeneralizedRCNN"):  # a plain model
        check_distill_section(load_config(TINY, MICRO + ["DATASETS.UNLABELED", "('test_unlabeled_mix',)"]))
    with pytest.raises(ValueError, match="1 images per worker batch gives 0 labelled and 1 unlabeled"):
        split_batch(1, 0.5)
    with pytest.raises(ValueError, match="RATIO is 0.5 but DATASETS.UNLABELED names no dataset"):
        uses_unlabeled(load_config(TINY, MICRO + ["DISTILL.UNLABELED.RATIO", "0.5"]))
    with pytest.raises(ValueError, match="RATIO is 0: its pages would never be used"):
        uses_unlabeled(load_config(TINY, MICRO + ["DATASETS.UNLABELED", "('test_unlabeled_mix',)"]))



def test_mixed_training_loads_each_dataset_once(use_synthetic_root, tmp_path, registered, monkeypatch):
    """The trainer checks the labelled pages and builds the mixed loader from one load of each
    dataset (their loader functions count their calls)."""
    folder = tmp_path / "pages"
    folder.mkdir()
    for k in range(2):
        _page(seed=k).save(folder / f"p{k}.png")
    register_unlabeled_pages("test_unlabeled_once", [str(folder)], cache_dir=str(tmp_path / "cache"))
    registered.append("test_unlabeled_once")
    calls = {}
    for name in ("synthetic_doclaynet_train", "test_unlabeled_once"):
        def counted(name=name, load=DatasetCatalog.data[name]):
            calls[name] = calls.get(name, 0) + 1
            return load()
        monkeypatch.setitem(DatasetCatalog.data, name, counted)
    cfg = load_config(TINY, MICRO + ["MODEL.META_ARCHITECTURE", "DistillGeneralizedRCNN", "SOLVER.IMS_PER_BATCH",
                                     "2", "DATASETS.UNLABELED", "('test_unlabeled_once',)",
                                     "DISTILL.UNLABELED.RATIO", "0.5"])
    assert isinstance(Trainer.build_train_loader(cfg), MixedBatchLoader)
    assert calls == {"synthetic_doclaynet_train": 1, "test_unlabeled_once": 1}


def _teacher(tmp_path):
    """A random-init teacher (detections score about 1/12) that keeps its 5 best per page."""
    config = write_config(str(tmp_path / "teacher.yaml"), TINY, ["MODEL.FPN.OUT_CHANNELS", "64", "TEST.DETECTIONS_PER_IMAGE", "5"])
    return config, save_random_weights(config, str(tmp_path / "teacher.pth"), seed=123)


def _model(tmp_path, losses, score_thresh=0.0, pseudo=False):
    config, weights = _teacher(tmp_path)
    cfg = distill_cfg(config, losses, teacher_weights=weights, opts=[
        "DISTILL.UNLABELED.RATIO", "0.5", "DISTILL.UNLABELED.SCORE_THRESH", str(score_thresh),
        "DISTILL.UNLABELED.PSEUDO_LABELS", str(pseudo)])
    return build_model(cfg).train()


def _unlabeled(batch, *indices):
    for i in indices:
        del batch[i]["instances"]
    return batch


def _losses(model, batch):
    torch.manual_seed(0)
    with EventStorage(0):
        return model(batch)


def test_unlabeled_images_add_no_ground_truth_losses(tmp_path):
    model = _model(tmp_path, ["fitnet", "logit_kd"])
    mixed = _losses(model, _unlabeled(fake_batch(2, seed=4), 1))
    alone = _losses(model, fake_batch(2, seed=4)[:1])  # the labelled image alone
    detection = [k for k in alone if not k.startswith("loss_kd_")]
    for k in detection:  # the labelled image's own detection losses ...
        assert torch.allclose(mixed[k], alone[k], atol=1e-5), k
        assert float(mixed[f"unlabeled/{k}"]) == 0  # ... and none from the unlabeled one
    for k in ("loss_kd_fitnet", "loss_kd_logit_kd"):  # KD on both, weighted by their share of the batch
        assert torch.allclose(mixed[k], 0.5 * alone[k], atol=1e-5)
        assert float(mixed[f"unlabeled/{k}"]) > 0


def test_teacher_detections_are_the_boxes_of_unlabeled_images(tmp_path):
    model = _model(tmp_path, ["fgd", "logit_kd"])
    batch = fake_batch(2, seed=5)
    with torch.no_grad():  # the teacher's own inference on the unlabeled image
        detections = model.teacher.inference([batch[1]], do_postprocess=False)[0]
    # A threshold between two scores far apart: the teacher's scores in the model (its backbone run
    # on the batch's images) may differ from this inference in the last float bits.
    scores = detections.scores.sort(descending=True).values
    k = int((scores[:-1] - scores[1:])[: len(scores) - 2].argmax())  # keeps 1 .. n-1 detections
    thresh = float(scores[k] + scores[k + 1]) / 2
    model.unlabeled.score_thresh = thresh
    expected = detections.pred_boxes.tensor[detections.scores >= thresh]
    seen = []
    original = model.distillers["fgd"].forward
    model.distillers["fgd"].forward = lambda ctx: seen.append(ctx) or original(ctx)
    losses = _losses(model, _unlabeled(batch, 1))
    labelled, unlabeled = seen
    assert torch.equal(labelled.gt_instances[0].gt_boxes.tensor, batch[0]["instances"].gt_boxes.tensor)
    assert 0 < len(expected) < len(detections)
    assert torch.allclose(unlabeled.gt_instances[0].gt_boxes.tensor, expected, atol=1e-4)
    assert isinstance(unlabeled.gt_instances[0].gt_masks, BitMasks)  # from the teacher's mask head
    # RoI sampling for ROI KD: foreground RoIs are those matched to a teacher box, with its class.
    sampled = unlabeled.s_stages[0].proposals[0]
    fg = sampled.gt_classes < 11
    assert fg.any() and set(sampled.gt_classes[fg].tolist()) <= set(detections.pred_classes.tolist())
    assert float(losses["unlabeled/loss_kd_fgd_fg"]) > 0
    # No teacher box above the threshold: no foreground term, the rest still runs.
    model.unlabeled.score_thresh = 2.0
    losses = _losses(model, _unlabeled(fake_batch(2, seed=5), 1))
    assert float(losses["unlabeled/loss_kd_fgd_fg"]) == 0 and float(losses["unlabeled/loss_kd_fgd_bg"]) > 0


def test_pseudo_labels_train_the_detection_losses(tmp_path):
    model = _model(tmp_path, ["fitnet"], pseudo=True)
    losses = _losses(model, _unlabeled(fake_batch(2, seed=6), 0, 1))
    names = ["loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"]
    assert not any(name in losses for name in names)  # no labelled image in the batch
    for name in names:
        assert float(losses[f"unlabeled/{name}"]) > 0, name
    sum(losses[f"unlabeled/{name}"] for name in names).backward(retain_graph=True)
    predictor = model.student.roi_heads.box_predictor
    assert predictor.bbox_pred.weight.grad.abs().sum() > 0 and predictor.cls_score.weight.grad.abs().sum() > 0
    sum(losses.values()).backward()  # every trainable parameter gets a gradient (DDP)
    assert not [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.unlabeled.pseudo_labels = False  # the same batch without pseudo labels: x0
    model.unlabeled.pseudo_label_weight = 0.0
    losses = _losses(model, _unlabeled(fake_batch(2, seed=6), 0, 1))
    assert all(float(losses[f"unlabeled/{name}"]) == 0 for name in names)


@pytest.fixture
def teacher_files(tmp_path):
    return _teacher(tmp_path)


def _run_pseudo_label(config, weights, inputs, out, *extra):
    return tool_main("pseudo_label")(
        ["--config-file", config, "--input", *inputs, "--output", str(out), "--min-score", "0.0", "--dpi", "72",
         "--no-progress", *extra, "MODEL.WEIGHTS", weights])


def test_pseudo_label_tool_writes_coco_with_scores_and_resumes(tmp_path, teacher_files, monkeypatch, registered):
    config, weights = teacher_files
    folder = tmp_path / "docs"
    folder.mkdir()
    _page(seed=1).save(folder / "a.png")
    _page(seed=2).save(folder / "b.png")
    pdf = _pdf(tmp_path / "doc.pdf", [_page(seed=3), _page(blank=True)])
    out = tmp_path / "pseudo"
    calls = []
    from dla_kd import Predictor

    original = Predictor.__call__
    monkeypatch.setattr(Predictor, "__call__", lambda self, image: calls.append(1) or original(self, image))

    assert _run_pseudo_label(config, weights, [str(folder), pdf], out) == 0  # the blank page is no failure
    with open(out / LABELS_FILE) as f:
        coco = json.load(f)
    assert len(calls) == 3 and len(coco["images"]) == 3
    assert coco["images"][2]["file_name"].startswith("pages/") and os.path.isfile(out / coco["images"][2]["file_name"])
    assert coco["annotations"] and all(0 <= a["score"] <= 1 and a["segmentation"] for a in coco["annotations"])
    teacher = coco["info"]["teacher"]
    assert teacher["weights"]["path"] == os.path.abspath(weights) and len(teacher["weights"]["sha256"]) == 64
    assert teacher["classes"] == [c["name"] for c in coco["categories"]] and len(teacher["classes"]) == 11
    assert coco["info"]["min_score"] == 0.0 and coco["info"]["polygon_tolerance"] == 1.0
    assert min(len(p) for a in coco["annotations"] for p in a["segmentation"]) >= 6  # >= 3 points each

    # Interrupted after the first page, killed in the middle of writing the second.
    lines = (out / JOURNAL_FILE).read_text().splitlines(keepends=True)
    (out / JOURNAL_FILE).write_text("".join(lines[:2]) + lines[2][:40])
    os.remove(out / LABELS_FILE)
    calls.clear()
    assert _run_pseudo_label(config, weights, [str(folder), pdf], out) == 0
    assert len(calls) == 2  # only the pages the journal lacked
    with open(out / LABELS_FILE) as f:
        resumed = json.load(f)
    assert [i["file_name"] for i in resumed["images"]] == [i["file_name"] for i in coco["images"]]
    calls.clear()
    assert _run_pseudo_label(config, weights, [str(folder), pdf], out) == 0 and not calls
    # The same pages through a symlinked folder (another checkout with the data linked) are done too.
    (tmp_path / "linked").symlink_to(folder)
    assert _run_pseudo_label(config, weights, [str(tmp_path / "linked"), pdf], out) == 0 and not calls
    with open(out / LABELS_FILE) as f:
        assert len(json.load(f)["images"]) == 3
    # The same teacher from another place (a copied checkpoint, another checkout) goes on ...
    moved = tmp_path / "moved" / "teacher.pth"
    moved.parent.mkdir()
    shutil.copyfile(weights, moved)
    assert _run_pseudo_label(config, str(moved), [str(folder), pdf], out) == 0 and not calls
    # ... other weights or another teacher setting in the same folder are refused.
    other_weights = save_random_weights(config, str(tmp_path / "other_teacher.pth"), seed=9)
    assert _run_pseudo_label(config, other_weights, [str(folder)], out) == 2
    assert _run_pseudo_label(config, weights, [str(folder)], out, "--dpi", "100") == 2
    assert _run_pseudo_label(config, weights, [str(folder)], out, "--polygon-tolerance", "0") == 2

    # Registered as training data above a score threshold ...
    thresh = float(np.median([a["score"] for a in coco["annotations"]]))
    register_pseudo_labeled("test_pseudo_ok", "doclaynet", str(out / LABELS_FILE), score_thresh=thresh,
                            teacher_weights=weights)
    registered.append("test_pseudo_ok")
    dicts = DatasetCatalog.get("test_pseudo_ok")
    kept = sum(len(d["annotations"]) for d in dicts)
    assert kept == sum(a["score"] >= thresh for a in coco["annotations"]) < len(coco["annotations"])
    # ... and refused for another class set or another teacher.
    register_pseudo_labeled("test_pseudo_classes", "publaynet", str(out / LABELS_FILE))
    registered.append("test_pseudo_classes")
    with pytest.raises(PseudoLabelMismatchError, match=r"teacher \(config .*teacher.yaml, weights .*teacher.pth\) "
                       r"are for the classes \['Caption'.*table 'publaynet'.*class 0 is 'Caption' in the file"):
        DatasetCatalog.get("test_pseudo_classes")
    other = save_random_weights(config, str(tmp_path / "other.pth"), seed=7)
    register_pseudo_labeled("test_pseudo_teacher", "doclaynet", str(out / LABELS_FILE), teacher_weights=other)
    registered.append("test_pseudo_teacher")
    with pytest.raises(PseudoLabelMismatchError, match="written by another teacher.*teacher.pth.*not by .*other.pth"):
        DatasetCatalog.get("test_pseudo_teacher")
