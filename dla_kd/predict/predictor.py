"""``Predictor``: a layout detector on pages, from a Detectron2 checkpoint (plain or distillation)
or from an exported TorchScript/ONNX file, with the same pre/post-processing and output in all
cases."""
from typing import Dict, Optional, Sequence

import numpy as np
from detectron2.config import CfgNode
from detectron2.structures import Instances

from ..engine import load_config
from ..export.processing import postprocess, preprocess
from ..export.runtime import TorchRunner, load_exported
from ..export.spec import ModelSpec
from ..export.student import build_deployable_model
from .records import page_record
from .visualize import draw_detections


class Predictor:
    """Detect the layout of pages.

    ::

        predictor = Predictor.from_checkpoint("configs/...yaml", "model_final.pth")  # plain or distillation
        predictor = Predictor.from_exported("export/model.onnx")  # or model.ts, with export_info.json
        instances = predictor(image_rgb)                 # (H, W, 3) uint8 -> detections on the page
        record = predictor.record(instances, "page.png")  # COCO-style dict (see dla_kd.predict.records)
        summary = predictor.predict_files(["scans/", "doc.pdf"], "out/")  # JSON + PNG per page

    ``runner`` maps a resized (3, h, w) float32 image to raw detections (see
    :mod:`dla_kd.export.runtime`); ``spec`` says how to feed it and name its classes;
    ``min_score`` drops detections scoring below it (on top of the model's own threshold).
    """

    def __init__(self, runner, spec: ModelSpec, min_score: Optional[float] = None):
        self.runner = runner
        self.spec = spec
        self.min_score = min_score

    @classmethod
    def from_config(cls, cfg: CfgNode, weights: Optional[str] = None, **kwargs) -> "Predictor":
        """The deployable model of ``cfg`` (the student of a distillation config) with ``weights``
        (default ``cfg.MODEL.WEIGHTS``). Weights not matching the config raise
        ``IncompleteCheckpointError`` naming the file and the keys."""
        weights = weights or cfg.MODEL.WEIGHTS
        if not weights:
            raise ValueError("No weights: give a checkpoint (MODEL.WEIGHTS path/to/model.pth)")
        plain_cfg, model = build_deployable_model(cfg, weights)
        return cls(TorchRunner(model), ModelSpec.from_cfg(plain_cfg, model.backbone.size_divisibility), **kwargs)

    @classmethod
    def from_checkpoint(cls, config_file: str, weights: Optional[str] = None, opts: Sequence[str] = (), **kwargs) -> "Predictor":
        """:meth:`from_config` of ``config_file`` + ``opts`` (``["KEY", "VALUE", ...]``)."""
        return cls.from_config(load_config(config_file, opts), weights, **kwargs)

    @classmethod
    def from_exported(cls, path: str, num_threads: Optional[int] = None, **kwargs) -> "Predictor":
        """An exported ``model.ts``/``model.onnx`` (or its folder) with its ``export_info.json``."""
        runner, spec, _ = load_exported(path, num_threads)
        return cls(runner, spec, **kwargs)

    @property
    def backend(self) -> str:
        return self.runner.backend

    def __call__(self, image_rgb: np.ndarray) -> Instances:
        """(H, W, 3) uint8 RGB page -> detections on it (CPU): ``pred_boxes`` XYXY page pixels,
        ``scores``, ``pred_classes`` (contiguous, see ``spec.categories``), ``pred_masks`` (N, H, W) bool."""
        raw = self.runner(preprocess(image_rgb, self.spec))
        instances = postprocess(raw, image_rgb.shape[:2], self.spec).to("cpu")
        if self.min_score is not None:
            instances = instances[instances.scores >= self.min_score]
        return instances

    def record(self, instances: Instances, file_name: str, page: Optional[int] = None,
               dpi: Optional[float] = None, mask_format: str = "polygon") -> Dict:
        """COCO-style JSON record of one page (:func:`dla_kd.predict.records.page_record`)."""
        return page_record(instances, self.spec, file_name, page, dpi, self.backend, mask_format)

    def visualize(self, image_rgb: np.ndarray, instances: Instances) -> np.ndarray:
        """(H, W, 3) uint8 RGB picture of the detections, coloured by category."""
        return draw_detections(image_rgb, instances, self.spec)

    def predict_files(self, paths: Sequence[str], output_dir: str, **kwargs):
        """Images, folders and PDFs -> JSON (+ PNG) per page in ``output_dir``; bad files are
        reported, not fatal. See :func:`dla_kd.predict.batch.predict_files` for the options."""
        from .batch import predict_files

        return predict_files(self, paths, output_dir, **kwargs)
