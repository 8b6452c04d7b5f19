"""``Predictor``: a layout detector on pages, from a Detectron2 checkpoint (plain or distillation)
or from an exported TorchScript/ONNX file, with the same pre/post-processing and output in all
cases."""
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.structures import Instances

from ..config import load_config
from ..inference.budget import Budget
from ..inference.processing import postprocess, preprocess
from ..inference.runtime import TorchRunner, load_exported, run_batch
from ..inference.spec import ModelSpec
from ..inference.student import build_deployable_model
from .records import DEFAULT_OUTPUT_FORMAT, page_record
from .visualize import DEFAULT_VIS_MAX_SIZE, draw_detections


class Predictor:
    """Detect the layout of pages.

    ::

        predictor = Predictor.from_checkpoint("configs/...yaml", "model_final.pth")  # plain or distillation
        predictor = Predictor.from_exported("export/model.onnx")  # or model.ts, with export_info.json
        instances = predictor(image_rgb)                 # (H, W, 3) uint8 -> detections on the page
        pages = predictor.predict_batch([image1, image2])  # PyTorch: one forward per page size
        record = predictor.record(instances, "page.png")  # COCO-style dict (see dla_kd.predict.records)
        summary = predictor.predict_files(["scans/", "doc.pdf"], "out/")  # JSON + PNG per page

    ``runner`` maps a resized (3, h, w) float32 image to raw detections (see
    :mod:`dla_kd.inference.runtime`); ``spec`` says how to feed it and name its classes;
    ``min_score`` drops detections scoring below it (on top of the model's own threshold).
    """

    def __init__(self, runner, spec: ModelSpec, min_score: Optional[float] = None):
        self.runner = runner
        self.spec = spec
        self.min_score = min_score

    @classmethod
    def from_config(cls, cfg: CfgNode, weights: Optional[str] = None, budget: Optional[Budget] = None,
                    num_threads: Optional[int] = None, **kwargs) -> "Predictor":
        """The deployable model of ``cfg`` (the student of a distillation config) with ``weights``
        (default ``cfg.MODEL.WEIGHTS``) and a test-time ``budget`` (:mod:`dla_kd.inference.budget`).
        ``num_threads``: torch's CPU threads (process-wide; default: left as they are).
        Weights not matching the config raise ``IncompleteCheckpointError`` naming the file and the keys."""
        if num_threads:
            torch.set_num_threads(num_threads)
        weights = weights or cfg.MODEL.WEIGHTS
        if not weights:
            raise ValueError("No weights: give a checkpoint (MODEL.WEIGHTS path/to/model.pth)")
        plain_cfg, model = build_deployable_model(cfg, weights, budget)
        return cls(TorchRunner(model), ModelSpec.from_cfg(plain_cfg, model.backbone.size_divisibility), **kwargs)

    @classmethod
    def from_checkpoint(cls, config_file: str, weights: Optional[str] = None, opts: Sequence[str] = (),
                        budget: Optional[Budget] = None, **kwargs) -> "Predictor":
        """:meth:`from_config` of ``config_file`` + ``opts`` (``["KEY", "VALUE", ...]``)."""
        return cls.from_config(load_config(config_file, opts), weights, budget, **kwargs)

    @classmethod
    def from_exported(cls, path: str, num_threads: Optional[int] = None, **kwargs) -> "Predictor":
        """An exported ``model.ts``/``model.onnx``/``model.int8.onnx`` (or its folder: the file its
        ``export_info.json`` names) with that ``export_info.json``; pages are resized to the
        export's test size and its budget is the one traced in (``export_info.json`` "budget")."""
        runner, spec, _ = load_exported(path, num_threads)
        return cls(runner, spec, **kwargs)

    @property
    def backend(self) -> str:
        return self.runner.backend

    @property
    def batch_forward(self) -> bool:
        """Whether several pages share one forward (PyTorch); exported graphs take one image."""
        return hasattr(self.runner, "batch")

    def __call__(self, image_rgb: np.ndarray) -> Instances:
        """(H, W, 3) uint8 RGB page -> detections on it (CPU): ``pred_boxes`` XYXY page pixels,
        ``scores``, ``pred_classes`` (contiguous, see ``spec.categories``), ``pred_masks``
        (:class:`dla_kd.inference.masks.PageMasks`: ``crop(k)``/``paste(k)`` one mask at a time)."""
        return self.predict_batch([image_rgb])[0]

    def predict_batch(self, images_rgb: Sequence[np.ndarray]) -> List[Instances]:
        """Detections on each page, as :meth:`__call__` gives them. With a PyTorch model, pages of
        the same padded input size share one forward: their padding is then that of each page
        alone, so the detections are those of one page at a time (GroupNorm included). Exported
        graphs take one image: one call per page."""
        inputs = [preprocess(image, self.spec) for image in images_rgb]
        raws: List[Optional[Instances]] = [None] * len(inputs)
        for group in _same_padded_size(inputs, self.spec.size_divisibility):
            for i, raw in zip(group, run_batch(self.runner, [inputs[i] for i in group])):
                raws[i] = raw
        return [self._on_page(raw, image.shape[:2]) for raw, image in zip(raws, images_rgb)]

    def _on_page(self, raw: Instances, page_size) -> Instances:
        instances = postprocess(raw, page_size, self.spec).to("cpu")
        if self.min_score is not None:
            instances = instances[instances.scores >= self.min_score]
        return instances

    def record(self, instances: Instances, file_name: str, page: Optional[int] = None,
               dpi: Optional[float] = None, output_format: str = DEFAULT_OUTPUT_FORMAT) -> Dict:
        """COCO-style JSON record of one page (:func:`dla_kd.predict.records.page_record`;
        ``output_format`` "rle", "polygons" or "boxes")."""
        return page_record(instances, self.spec, file_name, page, dpi, self.backend, output_format)

    def visualize(self, image_rgb: np.ndarray, instances: Instances, max_size: int = DEFAULT_VIS_MAX_SIZE) -> np.ndarray:
        """uint8 RGB picture of the detections, coloured by category: the page size, or scaled
        down to a longest side of ``max_size`` (0: never)."""
        return draw_detections(image_rgb, instances, self.spec, max_size)

    def predict_files(self, paths: Sequence[str], output_dir: str, **kwargs):
        """Images, folders and PDFs -> JSON (+ PNG) per page in ``output_dir``; bad files are
        reported, not fatal. See :func:`dla_kd.predict.batch.predict_files` for the options."""
        from .batch import predict_files

        return predict_files(self, paths, output_dir, **kwargs)


def _same_padded_size(inputs: Sequence[torch.Tensor], divisibility: int) -> List[List[int]]:
    """Indices of ``inputs`` (3, h, w) grouped by (h, w) rounded up to ``divisibility``, in order."""
    d = max(int(divisibility), 1)
    groups: Dict[tuple, List[int]] = defaultdict(list)
    for i, image in enumerate(inputs):
        groups[tuple(-(-int(v) // d) * d for v in image.shape[1:])].append(i)
    return list(groups.values())
