"""Is the int8 model as good as the float one? Both ONNX files run in onnxruntime on N pages of a
registered dataset with annotations (spread over it), with the export's pre/post-processing; their
detections are scored by Detectron2's ``COCOEvaluator`` (bbox AP, as in training evaluation). The
check fails when the int8 AP is more than ``max_ap_drop`` AP points below the float AP: int8
boxes are not expected to equal float ones within a pixel tolerance, the accuracy is what counts.
"""
import contextlib
import io
import logging
import math
import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from detectron2.data import MetadataCatalog

from ..evaluation import LayoutCOCOEvaluator
from ..inference.processing import postprocess, preprocess
from ..inference.samples import read_image_rgb
from ..inference.spec import ModelSpec
from .calibration import dataset_records
from .errors import ExportError

logger = logging.getLogger(__name__)

DEFAULT_CHECK_IMAGES = 50
DEFAULT_MAX_AP_DROP = 1.0  # AP points (0-100)
AP_CHECK_DIR = "ap_check"  # in the export folder: <model>/coco_instances_results.json, the dataset as COCO json
NOT_CHECKED = {"checked": False, "passed": None,
               "reason": "AP not checked: no --check-dataset given (a registered dataset with annotations)"}


def saturation_hint(quantization: Dict) -> Optional[str]:
    """What to try when an int8 model quantized without ``reduce_range`` on a CPU without VNNI
    loses AP (``quantization``: export_info's record); None otherwise."""
    if quantization.get("reduce_range") or (quantization.get("cpu") or {}).get("vnni", True):
        return None
    return ("this CPU has no VNNI: its u8s8 int8 kernels add pairs of products in saturating 16-bit "
            "integers; --reduce-range (7-bit weights) avoids the overflow (the KD benchmark's CrossKD "
            "student on an AVX2 CPU: -2.63 AP without, -0.86 with; docs/deployment.md 'int8 ONNX')")


def _metrics(results: Dict, detections: int) -> Dict[str, float]:
    """AP, AP50, AP75 of COCOEvaluator's bbox results; NaN (no detection at all) counts as 0."""
    bbox = results.get("bbox", {})
    values = {k: float(bbox.get(k, math.nan)) for k in ("AP", "AP50", "AP75")}
    return {**{k: 0.0 if math.isnan(v) else v for k, v in values.items()}, "detections": detections}


def check_dataset(dataset: str, spec: ModelSpec, n_images: int = 1) -> list:
    """``n_images`` records of ``dataset`` (see :func:`.calibration.dataset_records`); it must have
    annotations and the model's classes, in order."""
    records = dataset_records(dataset, n_images)
    classes = list(MetadataCatalog.get(dataset).get("thing_classes", []))
    if classes != spec.class_names:
        raise ExportError(f"Check dataset {dataset!r} has the classes {classes}, the model {spec.class_names}")
    if not any(r.get("annotations") for r in records):
        raise ExportError(f"Check dataset {dataset!r} has no annotations: AP cannot be computed")
    return records


def bbox_ap(runners: Dict[str, Callable], spec: ModelSpec, dataset: str, n_images: int,
            output_dir: str) -> Tuple[Dict, int]:
    """({name: {"AP", "AP50", "AP75", "detections"}}, pages evaluated) of every runner (see
    :mod:`.runtime`) on ``n_images`` pages of ``dataset``; evaluator files go to ``output_dir/<name>``."""
    records = check_dataset(dataset, spec, n_images)
    evaluators, coco_json = {}, None
    for name in runners:  # the first converts the dataset, the others score against its conversion
        evaluators[name] = LayoutCOCOEvaluator(dataset, tasks=("bbox",), distributed=False, coco_json=coco_json,
                                               max_dets_per_image=spec.detections_per_image,
                                               output_dir=os.path.join(output_dir, name))
        coco_json = evaluators[name].coco_json
    for evaluator in evaluators.values():
        evaluator.reset()
    counts = dict.fromkeys(runners, 0)
    for record in records:
        page = read_image_rgb(record["file_name"])
        image = preprocess(page, spec)
        for name, runner in runners.items():
            raw = runner(image)
            if raw.has("pred_masks"):  # bbox AP: no mask pasting
                raw.remove("pred_masks")
            instances = postprocess(raw, page.shape[:2], spec)
            counts[name] += len(instances)
            evaluators[name].process([{"image_id": record["image_id"]}], [{"instances": instances}])
    ids = [r["image_id"] for r in records]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary
        results = {name: e.evaluate(img_ids=ids) for name, e in evaluators.items()}
    return {name: _metrics(results[name], counts[name]) for name in runners}, len(ids)


@dataclass
class APCheck:
    """The int8 model's bbox AP on ``images`` pages of ``dataset`` may be at most ``max_ap_drop``
    AP points below the float model's."""

    dataset: str
    images: int = DEFAULT_CHECK_IMAGES
    max_ap_drop: float = DEFAULT_MAX_AP_DROP

    def run(self, float_runner: Callable, int8_runner: Callable, spec: ModelSpec, output_dir: str) -> Dict:
        """What ``export_info.json`` records under ``int8_check``."""
        aps, n_images = bbox_ap({"float": float_runner, "int8": int8_runner}, spec, self.dataset, self.images,
                      os.path.join(output_dir, AP_CHECK_DIR))
        delta = aps["int8"]["AP"] - aps["float"]["AP"]
        result = {
            "checked": True, "passed": -delta <= self.max_ap_drop,
            "metric": "COCO bbox AP (detectron2 COCOEvaluator), both models in onnxruntime",
            "dataset": self.dataset, "images": n_images,
            "float_ap": aps["float"]["AP"], "int8_ap": aps["int8"]["AP"], "ap_delta": delta,
            "max_ap_drop": self.max_ap_drop, "float": aps["float"], "int8": aps["int8"],
        }
        (logger.info if result["passed"] else logger.error)(
            f"int8 check on {result['images']} pages of {self.dataset}: bbox AP {result['int8_ap']:.2f} (int8) vs "
            f"{result['float_ap']:.2f} (float), delta {delta:+.2f} (allowed drop {self.max_ap_drop})")
        return result
