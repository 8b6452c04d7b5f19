"""TorchScript export by tracing (Detectron2's ``TracingAdapter``, as ``tools/deploy/export_model.py
--export-method tracing``): the file runs with ``torch.jit.load(path)(image)`` without Detectron2."""
import os
from typing import List

import torch
from detectron2.export import dump_torchscript_IR
from detectron2.modeling import GeneralizedRCNN

from ..inference.tracing import quiet_tracing, tracing_adapter
from .errors import ExportError


def export_torchscript(model: GeneralizedRCNN, image: torch.Tensor, path: str, dump_ir: bool = False) -> List[str]:
    """Trace ``model`` on ``image`` ((3, h, w) float32, resized, model input format), save to
    ``path``; return the output names in tuple order. ``dump_ir`` also writes the code and IR
    next to it (Detectron2's ``dump_torchscript_IR``)."""
    adapter, names = tracing_adapter(model, image)
    try:
        with quiet_tracing(), torch.no_grad():
            traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
    except Exception as e:  # the tracer's errors name the op or Python construct; keep them, say where
        raise ExportError(f"TorchScript tracing of {type(model.backbone).__name__} + "
                          f"{type(model.roi_heads).__name__} failed: {type(e).__name__}: {e}") from e
    torch.jit.save(traced, path)
    if dump_ir:
        dump_torchscript_IR(traced, os.path.dirname(os.path.abspath(path)))
    return names
