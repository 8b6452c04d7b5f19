"""Exporting the deployable model of a config (the student alone for a distillation config) to
TorchScript or ONNX, with its plain config, ``export_info.json`` and a check against PyTorch."""
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from detectron2.config import CfgNode

from ..inference.budget import Budget
from ..inference.info import build_export_info, read_export_info, write_export_info
from ..inference.processing import preprocess
from ..inference.runtime import OnnxRunner, TorchRunner, exported_runner
from ..inference.samples import read_image_rgb, synthetic_page
from ..inference.spec import ModelSpec
from ..inference.student import STUDENT_CONFIG_FILE, build_deployable_model, is_distill_config, with_device
from .ap_check import NOT_CHECKED, APCheck, check_dataset
from .calibration import DEFAULT_CALIBRATION_IMAGES, page_loaders
from .check import BOX_TOL, MASK_TOL, SCORE_TOL, Comparison, check_runners
from .errors import ExportError
from .onnx import DEFAULT_OPSET, export_onnx
from .scripting import export_scripted
from .torchscript import export_torchscript

logger = logging.getLogger(__name__)

MODEL_FILES = {"torchscript": "model.ts", "onnx": "model.onnx", "torchscript-script": "model.ts"}
FORMATS = tuple(MODEL_FILES)
INT8_FILE = "model.int8.onnx"
INT8_METHOD = "; int8: onnxruntime static quantization (QDQ)"  # added to export_info's export_method
# The export builds, traces and checks the model on the CPU whatever MODEL.DEVICE says: a traced
# graph records its device, so a GPU machine writes the same file a CPU machine does.
EXPORT_DEVICE = "cpu"


@dataclass
class Int8Options:
    """int8 ONNX export: calibrated on ``calibration_images`` pages of ``calibration`` (a folder or
    a registered dataset), checked by ``check`` (bbox AP against the float model; None: not checked)."""

    calibration: str
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    per_channel: bool = True
    reduce_range: bool = False
    check: Optional[APCheck] = None


@dataclass
class ExportResult:
    model_file: str
    config_file: str
    info_file: str
    info: Dict
    comparisons: List[Comparison] = field(default_factory=list)

    @property
    def check_passed(self) -> Optional[bool]:
        """True/False after the checks (PyTorch comparison, int8 AP), None if none ran."""
        results = [c["passed"] for c in (self.info["check"], self.info.get("int8_check", {})) if c.get("passed") is not None]
        return all(results) if results else None


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
    budget: Optional[Budget] = None,
    int8: Optional[Int8Options] = None,
) -> ExportResult:
    """Export the deployable model of ``cfg`` with ``weights`` (plain or distillation checkpoint)
    to ``fmt`` ("torchscript" or "onnx" by tracing, "torchscript-script" by scripting) in
    ``output_dir``: ``model.ts``/``model.onnx``, ``student_config.yaml``, ``export_info.json``.
    Built, traced and checked on the CPU whatever ``MODEL.DEVICE`` says (``student_config.yaml``
    keeps it). Traced on the first sample image (a synthetic page if none); with ``check``, every sample is
    run through PyTorch and the exported file and the detections compared (result in
    ``info["check"]``; the caller decides what a failure means). A test-time ``budget`` is applied
    to the deployed config before tracing (``info["budget"]``). With ``int8`` (ONNX only), the
    float ``model.onnx`` is also quantized to ``model.int8.onnx`` (:mod:`.quantize`), the file
    ``export_info.json`` describes, and with ``check`` and ``int8.check`` their bbox APs are
    compared (``info["int8_check"]``).

    Raises :class:`.errors.ExportError` if the format cannot express the model, and the errors of
    ``build_deployable_model`` (e.g. ``IncompleteCheckpointError``) for weights not matching ``cfg``.
    """
    if fmt not in MODEL_FILES:
        raise ValueError(f"Unknown export format {fmt!r}; choose from {FORMATS}")
    if int8 is not None and fmt != "onnx":
        raise ExportError(f"int8 quantization is for ONNX exports (onnxruntime), not {fmt}")
    pages = [read_image_rgb(p) for p in sample_images]  # unreadable samples fail before any work
    budget = budget or Budget()
    plain_cfg, model = build_deployable_model(cfg, weights, budget, device=EXPORT_DEVICE)
    spec = ModelSpec.from_cfg(plain_cfg, model.backbone.size_divisibility)
    if int8 is not None:  # a missing calibration source or check dataset fails before any work too
        calibration = page_loaders(int8.calibration, int8.calibration_images)
        if check and int8.check is not None:
            check_dataset(int8.check.dataset, spec)
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
    config_path = write_plain_config(with_device(plain_cfg, cfg.MODEL.DEVICE), weights, output_dir)
    source = {"config_file": os.path.abspath(config_file) if config_file else "",
              "weights": os.path.abspath(weights), "distillation_config": is_distill_config(cfg)}
    if is_distill_config(cfg):
        source["distill_losses"] = list(cfg.DISTILL.LOSSES)
    info = build_export_info(fmt, path, spec, names, model, architecture_of(plain_cfg, model), source,
                             opset if fmt == "onnx" else None)
    info["budget"] = budget.describe(plain_cfg)
    info["export_device"] = EXPORT_DEVICE

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
    if int8 is not None:
        path = export_int8(model, path, names, spec, calibration, int8, check, info)
    info_path = write_export_info(info, output_dir)
    return ExportResult(path, config_path, info_path, info, comparisons)


def export_int8(model, float_path: str, names: List[str], spec: ModelSpec, calibration: List, int8: Int8Options,
                check: bool, info: Dict, folder: str = "") -> str:
    """Quantize the float ONNX file ``float_path`` to ``INT8_FILE`` in ``folder`` (default: next to
    it), AP-check it, and make ``info`` describe it (``file``, ``quantization``, ``int8_check``;
    ``quantization.float_file`` relative to ``folder``); returns its path."""
    from .quantize import PageReader, quantize_onnx  # onnxruntime: an optional dependency (dla-kd[export])

    folder = folder or os.path.dirname(float_path)
    path = os.path.join(folder, INT8_FILE)
    start = time.perf_counter()
    quantization = quantize_onnx(float_path, path, model, PageReader(calibration, spec), int8.per_channel,
                                 int8.reduce_range)
    logger.info(f"Quantized to int8 ({quantization['nodes']['int8']} int8 nodes) in {time.perf_counter() - start:.1f} s")
    info["quantization"] = {
        **quantization, "calibration": {"source": int8.calibration, "images": len(calibration)},
        "float_file": os.path.relpath(float_path, folder), "float_file_size_bytes": os.path.getsize(float_path),
    }
    info.update(file=INT8_FILE, file_size_bytes=os.path.getsize(path), export_method=info["export_method"] + INT8_METHOD)
    if check and int8.check is not None:
        info["int8_check"] = int8.check.run(OnnxRunner(float_path, names), OnnxRunner(path, names), spec, folder)
    else:
        info["int8_check"] = NOT_CHECKED if check else {**NOT_CHECKED, "reason": "AP not checked: checks disabled"}
    return path


def quantize_export(model, float_dir: str, int8: Int8Options, output_dir: str) -> str:
    """Quantize the float ONNX export in ``float_dir`` (written by :func:`export_model` from the
    deployable ``model``) once more, with other ``int8`` options, into ``output_dir``: its
    ``INT8_FILE`` and an ``export_info.json`` that is the float export's with the quantization
    (not AP-checked). The float graph is not exported again. Returns the int8 file's path."""
    info = read_export_info(float_dir)
    float_path = os.path.join(float_dir, MODEL_FILES["onnx"])
    if info["format"] != "onnx" or not os.path.isfile(float_path):
        raise ExportError(f"{float_dir} holds no float ONNX export ({MODEL_FILES['onnx']})")
    # The float file's description (undoes what export_int8 wrote when the float export was quantized too).
    info.pop("quantization", None)
    info.pop("int8_check", None)
    info.update(file=MODEL_FILES["onnx"], file_size_bytes=os.path.getsize(float_path),
                export_method=info["export_method"].replace(INT8_METHOD, ""))
    os.makedirs(output_dir, exist_ok=True)
    path = export_int8(model, float_path, [o["name"] for o in info["outputs"]], ModelSpec.from_dict(info["spec"]),
                       page_loaders(int8.calibration, int8.calibration_images), int8, False, info, output_dir)
    write_export_info(info, output_dir)
    return path
