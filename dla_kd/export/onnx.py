"""ONNX export by tracing (Detectron2's ``TracingAdapter`` + ``torch.onnx.export``), runnable in
onnxruntime: RoIAlign and NMS map to the ONNX ops ``RoiAlign`` and ``NonMaxSuppression``
(torchvision's symbolics), GroupNorm through :mod:`.onnx_symbolics`.

Opset: ``DEFAULT_OPSET`` = 16, not Detectron2's ``STABLE_ONNX_OPSET_VERSION`` (11). Detectron2's
FPN poolers are ``ROIAlignV2`` (``aligned=True``: half-pixel offset); ONNX ``RoiAlign`` has the
``coordinate_transformation_mode="half_pixel"`` it needs only from opset 16. Below 16 torchvision
exports it *without* the offset and only warns: every box moves and detections silently differ
(measured: boxes off by >100 px, other classes on the tiny model). :func:`check_opset` refuses it.
"""
from typing import List

import torch
from detectron2.layers import ROIAlign
from detectron2.modeling import GeneralizedRCNN

from ..inference.tracing import INPUT_NAME, IMAGE_SIZE_OUTPUT, quiet_tracing, tracing_adapter
from .errors import ExportError
from .onnx_symbolics import detectron2_onnx_symbolics

DEFAULT_OPSET = 16
MIN_OPSET_ALIGNED_ROIALIGN = 16


def check_opset(model: GeneralizedRCNN, opset: int) -> None:
    """Raise :class:`ExportError` if ``opset`` cannot express the model's RoIAlign exactly."""
    aligned = sorted({n for n, m in model.named_modules() if isinstance(m, ROIAlign) and m.aligned})
    if aligned and opset < MIN_OPSET_ALIGNED_ROIALIGN:
        raise ExportError(
            f"ONNX opset {opset} cannot export this model: its poolers use ROIAlignV2 (aligned=True, "
            f"e.g. {aligned[0]}), which ONNX RoiAlign supports only from opset {MIN_OPSET_ALIGNED_ROIALIGN} "
            "(coordinate_transformation_mode='half_pixel'); torchvision would drop the half-pixel offset "
            f"and the exported detections would be wrong. Use --opset {MIN_OPSET_ALIGNED_ROIALIGN} or higher."
        )


def export_onnx(model: GeneralizedRCNN, image: torch.Tensor, path: str, opset: int = DEFAULT_OPSET) -> List[str]:
    """Trace ``model`` on ``image`` ((3, h, w) float32, resized, model input format) into the ONNX
    file ``path`` with a dynamic image size and number of detections; return the output names
    (the graph's output names, in order). Errors of the exporter become :class:`ExportError`."""
    import onnx

    check_opset(model, opset)
    adapter, names = tracing_adapter(model, image)
    dynamic_axes = {INPUT_NAME: {1: "height", 2: "width"}}
    dynamic_axes.update({n: {0: "detections"} for n in names if n != IMAGE_SIZE_OUTPUT})
    try:
        with quiet_tracing(), torch.no_grad(), detectron2_onnx_symbolics(opset):
            torch.onnx.export(
                adapter, adapter.flattened_inputs, path, opset_version=opset,
                input_names=[INPUT_NAME], output_names=names, dynamic_axes=dynamic_axes,
                training=torch.onnx.TrainingMode.EVAL, do_constant_folding=True,
            )
        onnx.checker.check_model(path)
    except Exception as e:  # the exporter's errors name the op that fails; keep them, say where
        raise ExportError(f"ONNX export (opset {opset}) of {type(model.roi_heads).__name__} failed: "
                          f"{type(e).__name__}: {e}") from e
    return names
