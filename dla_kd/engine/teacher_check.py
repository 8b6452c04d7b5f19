"""Teacher sanity check before distillation: evaluate the teacher on a few validation images and
stop the run if it is at chance (the most common KD failure is a teacher that did not load)."""
import json
import logging
import os
from typing import Tuple

from detectron2.data import DatasetCatalog, DatasetMapper, build_detection_test_loader
from detectron2.engine import HookBase
from detectron2.evaluation import inference_on_dataset
from detectron2.utils import comm

from ..evaluation import LayoutCOCOEvaluator
from ..utils.rng import forked_rng

logger = logging.getLogger(__name__)


class TeacherAtChanceError(RuntimeError):
    """The teacher's validation AP is below ``DISTILL.TEACHER.SANITY_CHECK.MIN_AP``."""


def evaluate_teacher(teacher, tcfg, dataset_name: str, num_images: int, output_dir: str) -> Tuple[dict, int]:
    """(COCO bbox/segm results, number of images used) of ``teacher`` on the first ``num_images``
    images of ``dataset_name`` (fewer if the split is smaller), read with the teacher's own input
    format and test size."""
    dicts = DatasetCatalog.get(dataset_name)[:num_images]
    loader = build_detection_test_loader(dataset=dicts, mapper=DatasetMapper(tcfg, is_train=False))
    evaluator = SubsetCOCOEvaluator(
        [d["image_id"] for d in dicts], dataset_name, output_dir=output_dir,
        max_dets_per_image=tcfg.TEST.DETECTIONS_PER_IMAGE,
    )
    return inference_on_dataset(teacher, loader, evaluator), len(dicts)


class SubsetCOCOEvaluator(LayoutCOCOEvaluator):
    """COCOEvaluator scored on ``img_ids`` only. Detectron2's evaluator matches the predictions
    against every image of the dataset, so predictions for the first N of M images would be scored
    as if the other M - N pages had been missed (AP about N / M of the true one)."""

    def __init__(self, img_ids, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._img_ids = list(img_ids)

    def evaluate(self, img_ids=None):
        return super().evaluate(img_ids=self._img_ids if img_ids is None else img_ids)


class TeacherSanityCheck(HookBase):
    """Before training: teacher bbox AP on ``NUM_IMAGES`` images of ``DATASET`` (default
    ``DATASETS.TEST[0]``), logged and written to ``<OUTPUT_DIR>/teacher_sanity_check.json``;
    below ``MIN_AP`` the run stops with :class:`TeacherAtChanceError`."""

    def __init__(self, cfg, distill_model):
        self.cfg = cfg
        self.model = distill_model

    def before_train(self):
        check = self.cfg.DISTILL.TEACHER.SANITY_CHECK
        dataset = check.DATASET or (self.cfg.DATASETS.TEST[0] if self.cfg.DATASETS.TEST else "")
        if not dataset:
            raise ValueError("DISTILL.TEACHER.SANITY_CHECK needs a dataset: set its DATASET or DATASETS.TEST")
        out = os.path.join(self.cfg.OUTPUT_DIR, "teacher_sanity_check")
        with forked_rng():  # the training run draws what it would draw without the check
            results, num_images = evaluate_teacher(
                self.model.teacher, self.model.teacher_cfg, dataset, check.NUM_IMAGES, out
            )
        # Only the main process holds results; every rank must take the same decision.
        ap = comm.all_gather(results["bbox"]["AP"] if comm.is_main_process() else None)[0]
        if comm.is_main_process():
            with open(os.path.join(self.cfg.OUTPUT_DIR, "teacher_sanity_check.json"), "w") as f:
                report = {"dataset": dataset, "num_images": num_images, "bbox_AP": ap, "min_AP": check.MIN_AP}
                json.dump(report, f, indent=2)
        logger.info(f"Teacher sanity check on {num_images} images of {dataset}: bbox AP {ap:.2f}")
        if not ap >= check.MIN_AP:  # also catches NaN
            raise TeacherAtChanceError(
                f"The teacher's bbox AP on {num_images} images of {dataset} is {ap:.2f} < "
                f"DISTILL.TEACHER.SANITY_CHECK.MIN_AP {check.MIN_AP}: it is at chance. Check that "
                f"DISTILL.TEACHER.WEIGHTS ({self.cfg.DISTILL.TEACHER.WEIGHTS}) is the trained teacher for "
                f"DISTILL.TEACHER.CONFIG ({self.cfg.DISTILL.TEACHER.CONFIG}) and the dataset's classes."
            )
