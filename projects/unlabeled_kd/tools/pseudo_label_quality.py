"""How good the offline pseudo-labels are: the teacher's detections on the 5000 unlabeled
DocLayNet-style pages (every score >= 0.05 that tools/pseudo_label.py wrote) scored as detections
against the generator's truth of the same pages (COCO bbox AP, per class), and how many labels per
page the training threshold (0.5) keeps against the true number of objects.

    .venv/bin/python projects/unlabeled_kd/tools/pseudo_label_quality.py   # from the repository root, ~10 min

writes projects/unlabeled_kd/results/pseudo_label_quality.json.
"""
import contextlib
import io
import json

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

PSEUDO = "datasets/synthetic/doclaynet/unlabeled_pseudo/pseudo_labels.json"
TRUTH = "datasets/synthetic/doclaynet/unlabeled.json"
OUT = "projects/unlabeled_kd/results/pseudo_label_quality.json"
TRAIN_THRESH = 0.5  # SYNTHETIC_PSEUDO_LABELED in dla_kd/data/builtin.py


def main():
    with open(PSEUDO) as f:
        pseudo = json.load(f)
    truth = COCO(TRUTH)
    # the pseudo-label file lists the pages by path; the truth by file name in its folder
    truth_ids = {img["file_name"]: img["id"] for img in truth.dataset["images"]}
    image_ids = {img["id"]: truth_ids[img["file_name"].rsplit("/", 1)[1]] for img in pseudo["images"]}
    detections = [{"image_id": image_ids[a["image_id"]], "category_id": a["category_id"], "bbox": a["bbox"],
                   "score": a["score"]} for a in pseudo["annotations"]]
    evaluator = COCOeval(truth, truth.loadRes(detections), "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    names = {c["id"]: c["name"] for c in truth.dataset["categories"]}
    per_class = {}
    for k, category in enumerate(evaluator.params.catIds):
        precision = evaluator.eval["precision"][:, :, k, 0, 2]  # all IoUs and recalls, area all, 100 dets
        valid = precision[precision > -1]
        per_class[names[category]] = round(float(valid.mean()) * 100, 1) if valid.size else None
    pages = len(pseudo["images"])
    result = {
        "pseudo_labels": PSEUDO, "truth": TRUTH, "pages": pages, "teacher": pseudo["info"]["teacher"]["weights"]["sha256"],
        "bbox_AP": round(evaluator.stats[0] * 100, 1), "AP50": round(evaluator.stats[1] * 100, 1),
        "AP75": round(evaluator.stats[2] * 100, 1), "per_class_AP": per_class,
        "objects_per_page_truth": round(len(truth.dataset["annotations"]) / len(truth.dataset["images"]), 2),
        f"labels_per_page_score_ge_{TRAIN_THRESH}": round(
            sum(a["score"] >= TRAIN_THRESH for a in pseudo["annotations"]) / pages, 2),
    }
    print(json.dumps(result, indent=1))
    with open(OUT, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
