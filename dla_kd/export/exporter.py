"""Exporting the deployable model of a config (the student alone for a distillation config) to
TorchScript or ONNX, with its plain config, ``export_info.json`` and a check against PyTorch."""
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from detectron2.config import CfgNode

from .check import BOX_TOL, MASK_TOL, SCORE_TOL, Comparison, check_runners
from .info import build_export_info, write_export_info
from .onnx import DEFAULT_OPSET, export_onnx
from .processing import preprocess
from .runtime import TorchRunner, exported_runner
from .samples import read_image_rgb, synthetic_page
from .scripting import export_scripted
from .spec import ModelSpec
from .student import STUDENT_CONFIG_FILE, build_deployable_model, is_distill_config
from .torchscript import export_torchscript

logger = logging.getLogger(__name__)

MODEL_FILES = {"torchscript": "model.ts", "onnx": "model.onnx", "torchscript-script": "model.ts"}
FORMATS = tuple(MODEL_FILES)


@dataclass
class ExportResult:
    model_file: str
    config_file: str
    info_file: str
    info: Dict
    comparisons: List[Comparison] = field(default_factory=list)

    @property
    def check_passed(self) -> Optional[bool]:
        """True/False after a check, None if the check was skipped."""
        return self.info["check"]["passed"]


def architecture_of(cfg: CfgNode, model) -> Dict:
    return {
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "backbone": cfg.MODEL.BACKBONE.NAME,
        "roi_heads": cfg.MODEL.ROI_HEADS.NAME,
        "num_classes": int(cfg.MODEL.ROI_HEADS.NUM_CLASSES),
        "mask_on": bool(cfg.MODEL.MASK_ON),
        "simkd_projector": hasattr(model.backbone, "projector"),
    }


def write_plain_config(cfg: CfgNode, weights: str, output_dir: str) -> str:
    """``<output_dir>/student_config.yaml``: the plain config, ``MODEL.WEIGHTS`` = the source
    checkpoint (plain or distillation: both load into it, see ``DLACheckpointer``)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = os.path.abspath(weights)
    path = os.path.join(output_dir, STUDENT_CONFIG_FILE)
    with open(path, "w") as f:
        f.write(cfg.dump())
    return path


def export_model(
    cfg: CfgNode,
    weights: str,
    fmt: str,
    output_dir: str,
    sample_images: Sequence[str] = (),
    check: bool = True,
    opset: int = DEFAULT_OPSET,
    dump_ir: bool = False,
    config_file: str = "",
    box_tol: float = BOX_TOL,
    score_tol: float = SCORE_TOL,
    mask_tol: float = MASK_TOL,
) -> ExportResult:
    """Export the deployable model of ``cfg`` with ``weights`` (plain or distillation checkpoint)
    to ``fmt`` ("torchscript" or "onnx" by tracing, "torchscript-script" by scripting) in
    ``output_dir``: ``model.ts``/``model.onnx``, ``student_config.yaml``, ``export_info.json``.
    Traced on the first sample image (a synthetic page if none); with ``check``, every sample is
    run through PyTorch and the exported file and the detections compared (result in
    ``info["check"]``; the caller decides what a failure means).

    Raises :class:`.errors.ExportError` if the format cannot express the model, and the errors of
    ``build_deployable_model`` (e.g. ``IncompleteCheckpointError``) for weights not matching ``cfg``.
    """
    if fmt not in MODEL_FILES:
        raise ValueError(f"Unknown export format {fmt!r}; choose from {FORMATS}")
    pages = [read_image_rgb(p) for p in sample_images]  # unreadable samples fail before any work
    plain_cfg, model = build_deployable_model(cfg, weights)
    spec = ModelSpec.from_cfg(plain_cfg, model.backbone.size_divisibility)
    sources = list(sample_images) or ["<synthetic page>"]
    pages = pages or [synthetic_page(spec.dataset)]
    images = [preprocess(page, spec) for page in pages]

    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, MODEL_FILES[fmt])
    start = time.perf_counter()
    if fmt == "onnx":
        names = export_onnx(model, images[0], path, opset)
    elif fmt == "torchscript-script":
        names = export_scripted(model, images[0], path)
    else:
        names = export_torchscript(model, images[0], path, dump_ir=dump_ir)
    logger.info(f"Exported {fmt} to {path} in {time.perf_counter() - start:.1f} s")
    config_path = write_plain_config(plain_cfg, weights, output_dir)
    source = {"config_file": os.path.abspath(config_file) if config_file else "",
              "weights": os.path.abspath(weights), "distillation_config": is_distill_config(cfg)}
    if is_distill_config(cfg):
        source["distill_losses"] = list(cfg.DISTILL.LOSSES)
    info = build_export_info(fmt, path, spec, names, model, architecture_of(plain_cfg, model), source,
                             opset if fmt == "onnx" else None)

    comparisons = []
    info["check"] = {"passed": None, "skipped": True}
    if check:
        runner = exported_runner(fmt, path, names)
        comparisons = check_runners(TorchRunner(model), runner, images,
                                    box_tol=box_tol, score_tol=score_tol, mask_tol=mask_tol)
        info["check"] = {
            "passed": all(c.ok for c in comparisons),
            "tolerances": {"box_px": box_tol, "score": score_tol, "mask_probability": mask_tol},
            "pages": [{"source": s, **c.to_dict()} for s, c in zip(sources, comparisons)],
        }
        for s, c in zip(sources, comparisons):
            (logger.info if c.ok else logger.error)(f"Check on {s}: {c.describe()}")
        if not any(c.n_reference for c in comparisons):
            logger.warning("The check compared no detections (none on the sample pages): give --sample-image "
                           "pages the model detects on for a meaningful check")
    info_path = write_export_info(info, output_dir)
    return ExportResult(path, config_path, info_path, info, comparisons)
