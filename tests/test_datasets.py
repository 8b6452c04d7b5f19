"""Dataset registration, category tables, validated COCO loading and its error messages."""
import json
import logging
import os

import pytest

import dla_kd  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from dla_kd.data import (
    DOCLAYNET_CATEGORIES,
    PUBLAYNET_CATEGORIES,
    CorruptAnnotationError,
    DatasetNotFoundError,
    load_layout_coco_json,
)
from layout_files import publaynet_like, write_image

DOCLAYNET_NAMES = [
    "Caption", "Footnote", "Formula", "List-item", "Page-footer", "Page-header",
    "Picture", "Section-header", "Table", "Text", "Title",
]


def test_category_tables_match_published_ids():
    assert [(c["id"], c["name"]) for c in PUBLAYNET_CATEGORIES] == [
        (1, "text"), (2, "title"), (3, "list"), (4, "table"), (5, "figure")
    ]
    assert [c["id"] for c in DOCLAYNET_CATEGORIES] == list(range(1, 12))
    assert [c["name"] for c in DOCLAYNET_CATEGORIES] == DOCLAYNET_NAMES
    for table in (PUBLAYNET_CATEGORIES, DOCLAYNET_CATEGORIES):
        colors = [tuple(c["color"]) for c in table]
        assert len(set(colors)) == len(colors), "each class needs its own colour"


@pytest.mark.parametrize(
    "name,classes",
    [
        ("publaynet_train", ["text", "title", "list", "table", "figure"]),
        ("publaynet_val", ["text", "title", "list", "table", "figure"]),
        ("doclaynet_train", DOCLAYNET_NAMES),
        ("doclaynet_val", DOCLAYNET_NAMES),
        ("doclaynet_test", DOCLAYNET_NAMES),
        ("synthetic_doclaynet_train", DOCLAYNET_NAMES),
        ("synthetic_publaynet_val", ["text", "title", "list", "table", "figure"]),
        ("synthetic_publaynet_as_doclaynet_val", DOCLAYNET_NAMES),
        ("synthetic_doclaynet_unlabeled_pseudo", DOCLAYNET_NAMES),
    ],
)
def test_registered_with_metadata(name, classes):
    assert name in DatasetCatalog.list()
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == classes
    assert meta.evaluator_type == "coco"
    first_id = 1
    assert meta.thing_dataset_id_to_contiguous_id == {first_id + i: i for i in range(len(classes))}
    assert len(meta.thing_colors) == len(classes)


def test_registered_dataset_loads_from_env_root(tmp_path, monkeypatch):
    publaynet_like(str(tmp_path))
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    dicts = DatasetCatalog.get("publaynet_val")
    assert [d["image_id"] for d in dicts] == [1, 2]
    assert dicts[0]["file_name"] == os.path.join(str(tmp_path), "publaynet", "val", "a.png")
    ann = dicts[1]["annotations"][0]
    assert ann["category_id"] == 4  # dataset id 5 (figure) -> contiguous 4
    assert ann["bbox"] == [10.0, 20.0, 40.0, 40.0] and ann["bbox_mode"] == BoxMode.XYWH_ABS
    assert ann["segmentation"] == [[10, 20, 50, 20, 50, 60, 10, 60]]


def test_missing_dataset_names_path_and_readme(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    with pytest.raises(DatasetNotFoundError) as e:
        DatasetCatalog.get("doclaynet_val")
    msg = str(e.value)
    assert os.path.join(str(tmp_path), "DocLayNet", "COCO", "val.json") in msg
    assert "datasets/README.md" in msg and "doclaynet_val" in msg


def test_builtin_pseudo_labels_not_yet_written_name_file_and_tool(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    with pytest.raises(DatasetNotFoundError) as e:
        DatasetCatalog.get("synthetic_doclaynet_unlabeled_pseudo")
    msg = str(e.value)
    assert os.path.join(str(tmp_path), "synthetic", "doclaynet", "unlabeled_pseudo", "pseudo_labels.json") in msg
    assert "tools/pseudo_label.py" in msg


def _ann(**kw):
    ann = {"id": 99, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "iscrowd": 0}
    ann.update(kw)
    return ann


@pytest.mark.parametrize(
    "bad_ann,expected",
    [
        (_ann(category_id=7), "unknown category_id 7"),
        (_ann(bbox=[5, 5, -3, 10]), "negative box size"),
        (_ann(bbox=[5, 5, 10]), "expected [x, y, width, height]"),
        (_ann(bbox=[50, 70, 40, 40]), "outside its 60x80 page"),
        (_ann(image_id=42), "refers to an image id that is not in 'images'"),
        (_ann(segmentation=[[1, 1, 5, 1, 5]]), "polygon with 5 coordinates"),
    ],
)
def test_corrupt_annotation_names_file_and_record(tmp_path, bad_ann, expected):
    path = publaynet_like(str(tmp_path), annotations=[bad_ann])
    with pytest.raises(CorruptAnnotationError) as e:
        load_layout_coco_json(path, os.path.dirname(path) + "/val", PUBLAYNET_CATEGORIES)
    msg = str(e.value)
    assert msg.startswith(path) and expected in msg
    if "image id that is not" not in expected:
        assert "annotation 99 (image 1)" in msg


def test_listed_image_missing_on_disk(tmp_path):
    path = publaynet_like(str(tmp_path), write_images=False)
    with pytest.raises(CorruptAnnotationError, match=r"image 1 is listed but its file .*a\.png does not exist"):
        load_layout_coco_json(path, str(tmp_path / "publaynet" / "val"), PUBLAYNET_CATEGORIES)


def test_invalid_json_and_wrong_category_names(tmp_path):
    path = publaynet_like(str(tmp_path))
    with open(path, "w") as f:
        f.write('{"images": [')
    with pytest.raises(CorruptAnnotationError, match="not valid JSON"):
        load_layout_coco_json(path, str(tmp_path / "publaynet" / "val"), PUBLAYNET_CATEGORIES)
    # A DocLayNet file read with the PubLayNet table: ids collide but names differ.
    path = publaynet_like(str(tmp_path))
    data = json.load(open(path))
    data["categories"] = [{"id": c["id"], "name": c["name"]} for c in DOCLAYNET_CATEGORIES[:5]]
    json.dump(data, open(path, "w"))
    with pytest.raises(CorruptAnnotationError, match="category id 1 is named 'Caption' but the table says 'text'"):
        load_layout_coco_json(path, str(tmp_path / "publaynet" / "val"), PUBLAYNET_CATEGORIES)


def test_zero_size_boxes_dropped_with_warning(tmp_path, caplog):
    anns = [_ann(id=1), _ann(id=2, bbox=[3, 3, 0, 5])]
    path = publaynet_like(str(tmp_path), annotations=anns)
    with caplog.at_level(logging.WARNING):
        dicts = load_layout_coco_json(path, str(tmp_path / "publaynet" / "val"), PUBLAYNET_CATEGORIES)
    assert sum(len(d["annotations"]) for d in dicts) == 1
    assert "dropped 1 annotations with zero width or height (ids [2])" in caplog.text


def test_doclaynet_precedence_policy(tmp_path):
    """Primary annotations only by default; 'all' keeps the redundant re-annotations."""
    root = str(tmp_path)
    write_image(os.path.join(root, "DocLayNet", "PNG", "p.png"))
    data = {
        "images": [{"id": 1, "file_name": "p.png", "width": 60, "height": 80, "doc_category": "laws_and_regulations",
                    "collection": "ann_reports_00_04_fancy", "doc_name": "x.pdf", "page_no": 3}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 10, "bbox": [1, 1, 20, 10], "precedence": 0},
            {"id": 2, "image_id": 1, "category_id": 10, "bbox": [1, 1, 21, 10], "precedence": 1},
            {"id": 3, "image_id": 1, "category_id": 4, "bbox": [1, 30, 21, 10], "precedence": 2},
        ],
        "categories": [{"id": c["id"], "name": c["name"]} for c in DOCLAYNET_CATEGORIES],
    }
    os.makedirs(os.path.join(root, "DocLayNet", "COCO"))
    with open(os.path.join(root, "DocLayNet", "COCO", "val.json"), "w") as f:
        json.dump(data, f)
    os.environ["DETECTRON2_DATASETS"] = root
    try:
        primary = DatasetCatalog.get("doclaynet_val")
        everything = DatasetCatalog.get("doclaynet_val_all_annotators")
    finally:
        del os.environ["DETECTRON2_DATASETS"]
    assert [a["bbox"][2] for a in primary[0]["annotations"]] == [20.0]
    assert len(everything[0]["annotations"]) == 3
    assert primary[0]["doc_category"] == "laws_and_regulations" and primary[0]["page_no"] == 3
