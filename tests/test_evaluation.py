"""LayoutCOCOEvaluator: Detectron2's COCOEvaluator with each evaluator's own COCO conversion."""
import json
import shutil

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode, Boxes, Instances

from dla_kd.evaluation import LayoutCOCOEvaluator

BOXES = [[10.0, 10.0, 60.0, 40.0], [20.0, 50.0, 90.0, 90.0]]


def _pages(boxes):
    return [{"file_name": f"page{i}.png", "image_id": i, "height": 100, "width": 100,
             "annotations": [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 0}]}
            for i, b in enumerate(boxes)]


@pytest.fixture
def dataset():
    """A two-page dataset registered without a ``json_file`` (as synthetic pages are)."""
    name = "test_layout_coco_evaluator"
    DatasetCatalog.register(name, lambda: _pages(BOXES))
    MetadataCatalog.get(name).set(thing_classes=["text"])
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _bbox_ap(name, output_dir, **kwargs):
    """bbox AP of detections equal to ``BOXES`` (score 0.9) on ``name``, evaluated in ``output_dir``."""
    evaluator = LayoutCOCOEvaluator(name, tasks=("bbox",), distributed=False, output_dir=str(output_dir), **kwargs)
    evaluator.reset()
    for i, box in enumerate(BOXES):
        instances = Instances((100, 100), pred_boxes=Boxes(torch.tensor([box])), scores=torch.tensor([0.9]),
                              pred_classes=torch.tensor([0]))
        evaluator.process([{"image_id": i}], [{"instances": instances}])
    return evaluator.evaluate()["bbox"]["AP"]


def test_each_evaluation_converts_the_dataset_into_its_own_folder(dataset, tmp_path):
    assert _bbox_ap(dataset, tmp_path / "a") == pytest.approx(100.0)
    assert (tmp_path / "a" / f"{dataset}_coco_format.json").is_file()
    assert "json_file" not in MetadataCatalog.get(dataset).as_dict()  # not left for later evaluations
    shutil.rmtree(tmp_path / "a")  # Detectron2's evaluator would read this folder's file from now on
    assert _bbox_ap(dataset, tmp_path / "b") == pytest.approx(100.0)
    assert (tmp_path / "b" / f"{dataset}_coco_format.json").is_file()


def test_a_changed_dataset_is_scored_against_its_new_annotations(dataset, tmp_path):
    assert _bbox_ap(dataset, tmp_path) == pytest.approx(100.0)
    DatasetCatalog.remove(dataset)  # the pages' annotations change; same name, same folder
    DatasetCatalog.register(dataset, lambda: _pages([[60.0, 60.0, 95.0, 95.0], BOXES[1]]))
    changed = _bbox_ap(dataset, tmp_path)  # one of two pages' detections is wrong now
    assert changed < 50.0 and changed == pytest.approx(_bbox_ap(dataset, tmp_path / "fresh"))


def test_a_dataset_with_its_own_coco_file_is_read_from_it(dataset, tmp_path):
    from detectron2.data.datasets.coco import convert_to_coco_dict

    coco_file = tmp_path / "instances.json"
    coco_file.write_text(json.dumps(convert_to_coco_dict(dataset)))
    MetadataCatalog.get(dataset).set(json_file=str(coco_file))
    assert _bbox_ap(dataset, tmp_path / "eval") == pytest.approx(100.0)
    assert MetadataCatalog.get(dataset).json_file == str(coco_file)
    assert not (tmp_path / "eval" / f"{dataset}_coco_format.json").exists()


def test_an_evaluator_scores_against_anothers_conversion_when_given_it(dataset, tmp_path):
    first = LayoutCOCOEvaluator(dataset, tasks=("bbox",), distributed=False, output_dir=str(tmp_path / "a"))
    assert first.coco_json == str(tmp_path / "a" / f"{dataset}_coco_format.json")
    assert _bbox_ap(dataset, tmp_path / "b", coco_json=first.coco_json) == pytest.approx(100.0)
    assert not (tmp_path / "b" / f"{dataset}_coco_format.json").exists()  # not converted again
    assert "json_file" not in MetadataCatalog.get(dataset).as_dict()
