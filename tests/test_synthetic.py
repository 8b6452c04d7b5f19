"""Tests of the synthetic page generator (dla_kd.data.synthetic) and its CLI."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from dla_kd.data.categories import get_categories
from dla_kd.data.coco_layout import load_layout_coco_json
from dla_kd.data.synthetic import STYLES, generate_dataset, generator, render_page
from dla_kd.data.synthetic.coco import clip_polygon, polygon_area
from dla_kd.data.synthetic.degrade import Degradation, skew_matrix, transform_points

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_PAGES = {"doclaynet": 8, "publaynet": 4, "publaynet_as_doclaynet": 4}


@pytest.fixture(scope="module", params=sorted(STYLES))
def dataset(request, tmp_path_factory):
    """(style, out_dir, json path, parsed json) of a small generated split, seed 0."""
    style = request.param
    out_dir = str(tmp_path_factory.mktemp(style))
    json_path = generate_dataset(style, NUM_PAGES[style], out_dir, seed=0, show_progress=False)
    with open(json_path) as f:
        return style, out_dir, json_path, json.load(f)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_layout_on_disk_and_pycocotools(dataset):
    style, out_dir, json_path, data = dataset
    assert json_path == os.path.join(out_dir, "train.json")
    coco = COCO(json_path)
    assert len(coco.getImgIds()) == NUM_PAGES[style]
    assert len(coco.getAnnIds()) == len(data["annotations"]) > 0
    assert not [f for f in os.listdir(out_dir) if ".tmp" in f]


def test_categories_are_the_table(dataset):
    style, _, _, data = dataset
    assert [(c["id"], c["name"]) for c in data["categories"]] == [(c["id"], c["name"]) for c in get_categories(STYLES[style].name)]


def test_images_exist_with_recorded_size(dataset):
    style, out_dir, _, data = dataset
    for img in data["images"]:
        assert (img["width"], img["height"]) == STYLES[style].page_size
        with Image.open(os.path.join(out_dir, "train", img["file_name"])) as im:
            assert im.size == (img["width"], img["height"]) and im.mode == "RGB"


def test_boxes_in_page_polygons_in_boxes(dataset):
    _, _, _, data = dataset
    sizes = {img["id"]: (img["width"], img["height"]) for img in data["images"]}
    ids = [a["id"] for a in data["annotations"]]
    assert len(set(ids)) == len(ids)
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        width, height = sizes[ann["image_id"]]
        assert w > 0 and h > 0 and ann["area"] > 0 and ann["iscrowd"] == 0
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
        for poly in ann["segmentation"]:
            assert len(poly) >= 6 and len(poly) % 2 == 0
            xy = np.array(poly).reshape(-1, 2)
            assert (xy[:, 0] >= x - 1).all() and (xy[:, 0] <= x + w + 1).all()
            assert (xy[:, 1] >= y - 1).all() and (xy[:, 1] <= y + h + 1).all()
            assert ann["area"] == pytest.approx(polygon_area(xy), abs=0.05)
        assert ann["area"] <= w * h + 1


def test_loads_with_project_loader(dataset):
    style, out_dir, json_path, data = dataset
    records = load_layout_coco_json(json_path, os.path.join(out_dir, "train"), get_categories(STYLES[style].name))
    assert sum(len(r["annotations"]) for r in records) == len(data["annotations"])


def test_class_mix(dataset):
    style, _, _, data = dataset
    used = {a["category_id"] for a in data["annotations"]}
    if style == "publaynet":
        assert used <= {1, 2, 3, 4, 5}
        assert {1, 2} <= used  # text and title on every few pages
    elif style == "publaynet_as_doclaynet":
        names = {c["id"]: c["name"] for c in get_categories("doclaynet")}
        assert {"Text", "Section-header"} <= {names[i] for i in used}
        assert not {"Page-header", "Page-footer"} & {names[i] for i in used}  # not annotated, as in PubLayNet
    else:
        assert len(used) >= 8, f"only classes {sorted(used)} in {NUM_PAGES[style]} pages"
        assert len(data["annotations"]) / len(data["images"]) > 10


def test_same_seed_is_byte_identical_and_pages_independent_of_count(dataset, tmp_path):
    style, out_dir, json_path, data = dataset
    fewer_dir, repeat_dir = tmp_path / "fewer", tmp_path / "repeat"
    fewer_json = generate_dataset(style, 2, str(fewer_dir), seed=0, show_progress=False)
    fewer = json.loads(_read(fewer_json))
    # the first pages of the longer run are the pages of the shorter one
    assert fewer["images"] == data["images"][:2]
    assert fewer["annotations"] == [a for a in data["annotations"] if a["image_id"] <= 2]
    for img in fewer["images"]:
        assert _read(fewer_dir / "train" / img["file_name"]) == _read(os.path.join(out_dir, "train", img["file_name"]))
    # same arguments -> same bytes, also when rendered by worker processes
    repeat_json = generate_dataset(style, 2, str(repeat_dir), seed=0, show_progress=False, num_workers=2)
    assert _read(repeat_json) == _read(fewer_json)
    for img in fewer["images"]:
        assert _read(repeat_dir / "train" / img["file_name"]) == _read(fewer_dir / "train" / img["file_name"])


def test_an_interrupted_generation_resumes_where_it_stopped(dataset, tmp_path, monkeypatch):
    style, out_dir, json_path, data = dataset
    real, drawn = generator._write_page, []

    def killed_after_two(job):
        if len(drawn) == 2:
            raise KeyboardInterrupt
        drawn.append(job[4])
        return real(job)

    monkeypatch.setattr(generator, "_write_page", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(style, NUM_PAGES[style], str(tmp_path), seed=0, show_progress=False)
    journal = generator.journal_path(str(tmp_path), "train")
    assert not os.path.exists(tmp_path / "train.json") and os.path.isfile(journal)
    with open(journal, "a") as f:
        f.write('{"index": 5, "rec')  # a line cut by the interruption
    drawn.clear()
    monkeypatch.setattr(generator, "_write_page", lambda job: drawn.append(job[4]) or real(job))
    resumed = generate_dataset(style, NUM_PAGES[style], str(tmp_path), seed=0, show_progress=False)
    assert drawn == list(range(2, NUM_PAGES[style]))  # the first two pages were not drawn again
    assert _read(resumed) == _read(json_path) and not os.path.exists(journal)
    # A journal of other settings (seed) is not mixed in: every page is drawn.
    drawn.clear()
    monkeypatch.setattr(generator, "_write_page", lambda job: drawn.append(job[4]) or (
        real(job) if len(drawn) < 2 else (_ for _ in ()).throw(KeyboardInterrupt)))
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(style, NUM_PAGES[style], str(tmp_path), seed=1, show_progress=False, other_settings="overwrite")
    drawn.clear()
    monkeypatch.setattr(generator, "_write_page", lambda job: drawn.append(job[4]) or real(job))
    generate_dataset(style, NUM_PAGES[style], str(tmp_path), seed=0, show_progress=False)
    assert drawn == list(range(NUM_PAGES[style]))


def test_a_finished_split_is_kept_and_one_of_other_settings_refused(tmp_path, monkeypatch, caplog):
    real, drawn = generator._write_page, []
    monkeypatch.setattr(generator, "_write_page", lambda job: drawn.append(job[4]) or real(job))
    json_path = generate_dataset("publaynet", 2, str(tmp_path), seed=0, show_progress=False)
    first, mtime = _read(json_path), os.stat(json_path).st_mtime_ns
    assert drawn == [0, 1]
    # Same settings: nothing drawn, the json is not rewritten.
    drawn.clear()
    assert generate_dataset("publaynet", 2, str(tmp_path), seed=0, show_progress=False) == json_path
    assert drawn == [] and os.stat(json_path).st_mtime_ns == mtime
    # Other settings: refused, naming the file and each difference; nothing touched.
    for kwargs, named in [({"seed": 1}, "seed 0 (asked: 1)"), ({"num_images": 3}, "num_images 2 (asked: 3)"),
                          ({"page_size": (300, 400)}, "image_size [612, 792] (asked: [300, 400])")]:
        args = {"seed": 0, "num_images": 2, **kwargs}
        with pytest.raises(FileExistsError) as error:
            generate_dataset("publaynet", out_dir=str(tmp_path), show_progress=False, **args)
        assert json_path in str(error.value) and named in str(error.value) and "--overwrite" in str(error.value)
        assert drawn == [] and _read(json_path) == first
    # A lost page image: the split is drawn again (same settings, same bytes), with a warning.
    os.remove(tmp_path / "train" / "000001.png")
    generate_dataset("publaynet", 2, str(tmp_path), seed=0, show_progress=False)
    assert drawn == [0, 1] and _read(json_path) == first and "1 page images are missing" in caplog.text
    # other_settings="overwrite" replaces it.
    drawn.clear()
    generate_dataset("publaynet", 3, str(tmp_path), seed=1, show_progress=False, other_settings="overwrite")
    assert drawn == [0, 1, 2] and generator.split_settings(json.loads(_read(json_path)))["num_images"] == 3


def test_a_registered_split_drawn_otherwise_is_used_with_a_warning_never_redrawn(tmp_path, monkeypatch, caplog):
    from dla_kd.data.builtin import ensure_synthetic_split

    json_path = generate_dataset("publaynet", 2, str(tmp_path), seed=0, split="val", show_progress=False)
    first = _read(json_path)
    monkeypatch.setattr(generator, "_write_page", lambda job: pytest.fail("a page was drawn"))
    assert ensure_synthetic_split(str(tmp_path), "publaynet", "val", 2, 0) == json_path
    assert "other settings" not in caplog.text
    assert ensure_synthetic_split(str(tmp_path), "publaynet", "val", 100, 1) == json_path
    assert f"{json_path}: drawn with other settings than the registered split: seed 0 (asked: 1), " \
           "num_images 2 (asked: 100); used as it is" in caplog.text
    assert _read(json_path) == first


def test_different_seed_or_split_differs(tmp_path):
    base = _read(generate_dataset("publaynet", 2, str(tmp_path / "a"), seed=0, show_progress=False))
    other_seed = _read(generate_dataset("publaynet", 2, str(tmp_path / "b"), seed=1, show_progress=False))
    other_split = generate_dataset("publaynet", 2, str(tmp_path / "c"), seed=0, split="val", show_progress=False)
    assert base != other_seed
    assert os.path.basename(other_split) == "val.json" and os.path.isdir(tmp_path / "c" / "val")
    assert json.loads(_read(other_split))["annotations"] != json.loads(base)["annotations"]


@pytest.mark.parametrize("style", sorted(STYLES))
def test_clean_page_boxes_hug_ink_and_do_not_overlap(style, monkeypatch):
    """Without degradation, every box is the tight extent of the ink inside it (so annotations
    and pixels agree, including the page's offset in the image) and distinct objects' boxes do
    not overlap (pictures excepted: their box is their polygon's extent)."""
    monkeypatch.setattr(generator, "sample_degradation", lambda rng: Degradation())
    picture_ids = {c["id"] for c in get_categories(STYLES[style].name) if c["name"] in ("Picture", "figure")}
    for index in range(3):
        page = render_page(style, STYLES[style].page_size, 5, "train", index)
        ink = page.image.min(axis=2) < 235
        boxes = []
        for category_id, polygon in page.objects:
            x0, y0 = np.floor(polygon.min(axis=0)).astype(int)
            x1, y1 = np.ceil(polygon.max(axis=0)).astype(int)
            boxes.append((x0, y0, x1, y1))
            if category_id in picture_ids:
                continue
            rows, cols = np.nonzero(ink[y0:y1, x0:x1])
            assert len(rows), (style, index, category_id)
            assert cols.min() <= 1 and cols.max() >= x1 - x0 - 2 and rows.min() <= 1 and rows.max() >= y1 - y0 - 2
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert min(a[2], b[2]) - max(a[0], b[0]) <= 1 or min(a[3], b[3]) - max(a[1], b[1]) <= 1, (a, b)


def test_skew_transform_matches_warp():
    """Polygons are moved with the same matrix that rotates the pixels."""
    image = np.zeros((300, 200), np.uint8)
    image[50:53, 150:153] = 255
    matrix = skew_matrix(1.5, 200, 300)
    warped = cv2.warpAffine(image, matrix, (200, 300), flags=cv2.INTER_LINEAR)
    rows, cols = np.nonzero(warped)
    weights = warped[rows, cols].astype(float)
    centroid = np.array([np.average(cols, weights=weights), np.average(rows, weights=weights)])
    assert np.allclose(transform_points(matrix, np.array([[151.0, 51.0]]))[0], centroid, atol=0.3)


def test_clip_polygon():
    square = np.array([[-10.0, -10], [10, -10], [10, 10], [-10, 10]])
    assert polygon_area(clip_polygon(square, (0, 0, 100, 100))) == pytest.approx(100)
    assert len(clip_polygon(square, (20, 20, 30, 30))) == 0


def test_shaped_picture_polygon_is_not_a_rectangle():
    from dla_kd.data.synthetic.fonts import Face
    from dla_kd.data.synthetic.pictures import picture_block

    block = picture_block(np.random.default_rng(0), "cutout", 120, 90, Face("dejavu-sans", 8))
    (region,) = block.regions
    polygon = region.polygon
    assert len(polygon) > 4
    assert (polygon >= 0).all() and (polygon[:, 0] <= block.width).all() and (polygon[:, 1] <= block.height).all()
    x0, y0 = polygon.min(axis=0)
    x1, y1 = polygon.max(axis=0)
    assert polygon_area(polygon) < 0.95 * (x1 - x0) * (y1 - y0)
    assert np.asarray(block.image)[0, 0].tolist() == [255, 255, 255]  # corner outside the outline


def test_cli(tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run(
        [
            sys.executable,
            "tools/make_synthetic_dataset.py",
            "--style",
            "doclaynet",
            "--num-images",
            "2",
            "--out",
            str(out),
            "--seed",
            "0",
            "--width",
            "500",
            "--height",
            "600",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    json_path = str(out / "train.json")
    assert result.stdout.splitlines()[0] == json_path
    assert "Text" in result.stdout
    data = json.loads(_read(json_path))
    assert [(i["width"], i["height"]) for i in data["images"]] == [(500, 600)] * 2


def test_publaynet_pages_labelled_as_doclaynet_are_the_publaynet_pages(tmp_path):
    """Same images as the publaynet style; every PubLayNet object has its DocLayNet counterpart
    (a PubLayNet list is the union of its DocLayNet list items; table and figure are the same box)."""
    pub = json.loads(_read(generate_dataset("publaynet", 4, str(tmp_path / "p"), seed=1, split="val", show_progress=False)))
    doc = json.loads(_read(generate_dataset("publaynet_as_doclaynet", 4, str(tmp_path / "d"), seed=1, split="val",
                                            show_progress=False)))
    assert [c["name"] for c in doc["categories"]] == [c["name"] for c in get_categories("doclaynet")]
    for img in pub["images"]:
        assert _read(tmp_path / "p" / "val" / img["file_name"]) == _read(tmp_path / "d" / "val" / img["file_name"])
    pub_names = {c["id"]: c["name"] for c in pub["categories"]}
    doc_names = {c["id"]: c["name"] for c in doc["categories"]}
    for pub_name, doc_name in (("table", "Table"), ("figure", "Picture")):
        boxes = [sorted((a["image_id"], a["bbox"]) for a in data["annotations"] if names[a["category_id"]] == name)
                 for data, names, name in ((pub, pub_names, pub_name), (doc, doc_names, doc_name))]
        assert boxes[0] == boxes[1]
    pub_text = sum(pub_names[a["category_id"]] in ("text", "title") for a in pub["annotations"])
    doc_text = sum(doc_names[a["category_id"]] in ("Text", "Title", "Section-header", "Caption", "Footnote", "Formula")
                   for a in doc["annotations"])
    assert pub_text == doc_text > 0

