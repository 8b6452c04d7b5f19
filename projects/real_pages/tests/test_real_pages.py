"""The real-pages study's own code: bootstrap AP intervals over pages, the configs' shared data and
schedule (and the KD config's recipe = the recommended one), the page list, the datasets."""
import os
import sys

import pytest

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(PROJECT))
sys.path[:0] = [PROJECT, os.path.join(PROJECT, "tools")]

from real_pages.evaluation import bootstrap_ap, coco_bbox_ap  # noqa: E402

CATEGORIES = [{"id": 1, "name": "text"}, {"id": 2, "name": "title"}, {"id": 3, "name": "list"}]
IMAGES = [{"id": 10, "width": 100, "height": 100}, {"id": 20, "width": 100, "height": 100}]
ANNOTATIONS = [{"image_id": 10, "category_id": 1, "bbox": [10, 10, 50, 20]},
               {"image_id": 20, "category_id": 1, "bbox": [10, 50, 50, 20]},
               {"image_id": 20, "category_id": 2, "bbox": [10, 10, 50, 10]}]


def _det(ann, score=0.9, **changes):
    return {"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": ann["bbox"], "score": score,
            **changes}


def test_perfect_detections_score_100_with_a_point_interval():
    result = bootstrap_ap(IMAGES, ANNOTATIONS, [_det(a) for a in ANNOTATIONS], CATEGORIES, samples=50,
                          means={"m": ["text", "title"]})
    assert result["point"]["AP"] == pytest.approx(100.0)
    assert result["point"]["per_class"] == {"text": pytest.approx(100.0), "title": pytest.approx(100.0), "list": None}
    assert result["interval"]["AP"] == [pytest.approx(100.0)] * 2
    assert result["interval"]["per_class"]["list"] is None  # no ground truth in any redraw
    assert result["per_class_samples"]["text"] == 50 and 0 < result["per_class_samples"]["title"] < 50
    assert result["means"]["m"]["point"] == pytest.approx(100.0)


def test_interval_spans_the_page_to_page_variation():
    # right on page 10 only; on page 20 the text box is missed and the title is a text
    detections = [_det(ANNOTATIONS[0]), _det(ANNOTATIONS[2], category_id=1, score=0.95)]
    point = coco_bbox_ap(IMAGES, ANNOTATIONS, detections, CATEGORIES)
    result = bootstrap_ap(IMAGES, ANNOTATIONS, detections, CATEGORIES, samples=200, seed=1)
    assert result["point"] == point
    lo, hi = result["interval"]["per_class"]["text"]
    assert lo == pytest.approx(0.0) and hi == pytest.approx(100.0)  # redraws of page 20 alone / page 10 alone
    assert 0.0 < point["per_class"]["text"] < 100.0 and point["per_class"]["title"] == 0.0
    again = bootstrap_ap(IMAGES, ANNOTATIONS, detections, CATEGORIES, samples=200, seed=1)
    assert again == result  # seeded


def test_configs_share_data_and_schedule_and_the_recommended_recipe():
    import json

    from dla_kd.engine import load_config

    configs = os.path.join(PROJECT, "configs")
    teacher, student, kd = (load_config(os.path.join(configs, name)) for name in (
        "teacher_R_18_FPN128.yaml", "student_MNv3S.yaml", "kd_recommended_R_18_to_MNv3S.yaml"))
    for key in ("DATASETS", "INPUT", "SOLVER", "TEST", "DATALOADER"):
        ignore = {"FORMAT"} if key == "INPUT" else set()  # the timm student reads RGB
        assert {k: v for k, v in teacher[key].items() if k not in ignore} == \
               {k: v for k, v in student[key].items() if k not in ignore}, key
        assert kd[key] == student[key], key
    assert {k: v for k, v in kd.MODEL.items() if k != "META_ARCHITECTURE"} == \
           {k: v for k, v in student.MODEL.items() if k != "META_ARCHITECTURE"}  # the same student
    assert teacher.MODEL.ROI_HEADS.NUM_CLASSES == student.MODEL.ROI_HEADS.NUM_CLASSES == 5
    assert kd.DISTILL.TEACHER.CONFIG == "projects/real_pages/configs/teacher_R_18_FPN128.yaml"
    # the KD benchmark's protocol selected the recipe (projects/kd_benchmark/pretrained/results/selection.json)
    benchmark = os.path.join(REPO, "projects", "kd_benchmark", "pretrained")
    with open(os.path.join(benchmark, "results", "selection.json")) as f:
        selected = json.load(f)["recommended"]
    recipe = load_config(os.path.join(benchmark, "configs", "recipes", selected + ".yaml"))
    assert {k: v for k, v in kd.DISTILL.items() if k != "TEACHER"} == \
           {k: v for k, v in recipe.DISTILL.items() if k != "TEACHER"}
    assert kd.MODEL.META_ARCHITECTURE == recipe.MODEL.META_ARCHITECTURE == "DistillGeneralizedRCNN"


def test_page_list_round_trip(tmp_path):
    import collect_pages

    records = [{"package": "texlive-science-doc", "version": "2022.20230122-4",
                "pdf": "/usr/share/doc/texlive-doc/latex/x/x.pdf", "page_index": 3, "sha256": "ab" * 32}]
    path = str(tmp_path / "pages.tsv")
    collect_pages.write_page_list(records, path)
    assert open(path).read().splitlines()[1] == "texlive-science-doc\t2022.20230122-4\ttexlive-doc/latex/x/x.pdf\t3\t" + "ab" * 32
    assert collect_pages.read_page_list(path) == records


def test_datasets_are_registered_with_publaynet_classes():
    from detectron2.data import MetadataCatalog

    from real_pages.datasets import TEST_SET, TRAIN_SET, register_real_pages

    register_real_pages()
    register_real_pages()  # idempotent
    for name in (TEST_SET, TRAIN_SET):
        assert MetadataCatalog.get(name).thing_classes == ["text", "title", "list", "table", "figure"]
    assert MetadataCatalog.get(TRAIN_SET).score_thresh == 0.5


def test_report_pairs_kd_and_supervised_runs_by_seed():
    import report

    def run(seed, ap):
        return {"seed": seed, "bbox": {"point": {"AP": ap}}}

    runs = {"student": [run(42, 15.0), run(1, 16.0), run(2, 14.0)],
            "kd_recommended": [run(42, 17.0), run(1, 17.0), run(7, 30.0), run(2, 17.0)]}
    seeds, mean, (low, high) = report.paired_difference(runs, "student", "kd_recommended")
    assert seeds == [1, 2, 42] and mean == pytest.approx(2.0)  # +2, +1, +3; seed 7 has no pair
    assert low == pytest.approx(2.0 - 4.303 / 3 ** 0.5, abs=1e-3) and high == pytest.approx(2.0 + 4.303 / 3 ** 0.5, abs=1e-3)
    assert "+2.0 bbox AP [" in report.paired_lines(runs, "student", ["kd_recommended", "student_synthetic"])


def test_report_takes_each_models_pages_per_s_from_its_own_speed_run(tmp_path):
    import json

    import report

    def result(name, ap, seed=None):
        bbox = {"point": {"AP": ap, "per_class": {"text": ap, "title": ap}},
                "means": {"mean over text/title/table/figure": {"point": ap}}}
        path = tmp_path / (f"{name}_seed{seed}.json" if seed is not None else f"{name}.json")
        path.write_text(json.dumps({"name": path.stem, "bbox": bbox}))

    result("teacher", 20.0)
    result("student", 10.0, seed=42)
    result("student_synthetic", 30.0, seed=42)
    (tmp_path / "student_speed.json").write_text(json.dumps(
        {"pages_per_s": 32.25, "detections": 855, "threads": 4, "pages_per_s_passes": [31.0, 32.25, 33.0]}))
    assert report.main(str(tmp_path)) == 0
    # how the speed was measured comes from the speed run, not from the report's text
    assert "4 threads, the median of 3 passes over the pages" in (tmp_path / "report.md").read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line.rstrip(" |").split(" | ")
            for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| ")}
    assert rows["student supervised (MNv3-Small)"][-2:] == ["32.25", "855"]
    # same architecture, other weights: not timed, so no number (the detections kept change the time)
    assert rows["student on synthetic pages only"][-2:] == ["-", "-"]
    assert rows["Detectron2 teacher (R-18, FPN 128)"][-2:] == ["-", "-"]
    assert (tmp_path / "report.png").stat().st_size > 0
