"""int8 ONNX: onnxruntime static quantization (QDQ format) of the exported float graph.

Quantized (int8 weights per output channel, uint8 activations calibrated by MinMax on pages at the
test size): the ``Conv``, ``Gemm`` and ``MatMul`` nodes that compute *features*: backbone, FPN
(+ SimKD projector), the RPN's shared 3x3 conv, the box head's FCs, the mask head's convs.
uint8 activations (U8S8), not int8: onnxruntime's x86 kernels are U8S8, and with int8 (S8S8)
activations onnxruntime 1.23 left every convolution unfused here (float ``Conv`` between
``DequantizeLinear``/``QuantizeLinear``: slower than the float model), while U8S8 runs as
``QLinearConv``. On AVX2/AVX-512 CPUs without VNNI the U8S8 kernels add pairs of products in
saturating 16 bits (``VPMADDUBSW``); ``reduce_range`` (7-bit weights) is onnxruntime's remedy.

Float: every number that becomes a score, a box coordinate or a mask probability. The
*prediction layers* of :data:`FLOAT_LAYERS` (RPN objectness and anchor deltas, box classifier
and box regression, mask predictor) are excluded by node, since int8 logits and deltas would tie
scores and move boxes by a step of their calibrated range; everything after them is of other op
types and never quantized: box decoding, top-k, NMS (``NonMaxSuppression``, inside ``If``
subgraphs, which the quantizer does not enter), RoIAlign (``RoiAlign`` has no int8 kernel: it
reads the dequantized FPN features and float boxes), softmax, sigmoid, mask pasting.
"""
import logging
import os
import tempfile
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np
import onnx
from detectron2.modeling.proposal_generator.rpn import StandardRPNHead
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.modeling.roi_heads.mask_head import BaseMaskRCNNHead
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, \
    quant_pre_process, quantize_static
from torch import nn

from ..inference.processing import preprocess
from ..inference.spec import ModelSpec
from ..inference.tracing import INPUT_NAME
from .errors import ExportError

logger = logging.getLogger(__name__)

QUANTIZED_OP_TYPES = ("Conv", "Gemm", "MatMul")
# head class -> its prediction layers (children), kept float
FLOAT_LAYERS = {
    StandardRPNHead: ("objectness_logits", "anchor_deltas"),
    FastRCNNOutputLayers: ("cls_score", "bbox_pred"),
    BaseMaskRCNNHead: ("predictor",),
}
WEIGHT_PREFIX = "model."  # TracingAdapter holds the detector as ``model``: initializer names are "model.<param>"
STAYS_FLOAT = [
    "prediction layers (RPN objectness/anchor deltas, box classifier/regression, mask predictor): "
    "int8 logits and deltas would tie scores and move boxes",
    "box decoding, top-k, NMS, score threshold: float ops on float boxes and scores",
    "RoIAlign: float (no int8 kernel), on the dequantized FPN features and float boxes",
    "GroupNorm, activations, softmax, sigmoid (frozen BN is folded into its conv by the pre-processing)",
]


class PageReader(CalibrationDataReader):
    """onnxruntime calibration data: one ``{"image": (3, h, w) float32}`` per page, resized as at
    test time; pages are decoded one at a time."""

    def __init__(self, loaders: List[Callable[[], np.ndarray]], spec: ModelSpec):
        self.loaders, self.spec = loaders, spec
        self.pages: Iterator = iter(loaders)

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        load = next(self.pages, None)
        return None if load is None else {INPUT_NAME: preprocess(load(), self.spec).numpy()}

    def rewind(self) -> None:
        self.pages = iter(self.loaders)


def float_layer_names(model: nn.Module) -> List[str]:
    """Module paths of the prediction layers of ``model`` (every head of a :data:`FLOAT_LAYERS`
    class, Cascade stages included)."""
    names = []
    for path, module in model.named_modules():
        for head, children in FLOAT_LAYERS.items():
            if isinstance(module, head):
                names += [f"{path}.{c}" for c in children if isinstance(getattr(module, c, None), nn.Module)]
    return names


def float_layer_nodes(graph: onnx.GraphProto, layers: List[str]) -> List[str]:
    """Names of the nodes of ``graph`` whose weight is the ``weight`` of one of ``layers`` (a
    shared head gives one node per feature level); every layer must have a node."""
    weights = {f"{WEIGHT_PREFIX}{layer}.weight": layer for layer in layers}
    nodes = [n for n in graph.node if n.op_type in QUANTIZED_OP_TYPES and len(n.input) > 1 and n.input[1] in weights]
    missing = set(layers) - {weights[n.input[1]] for n in nodes}
    if missing:
        raise ExportError(f"int8 export: no ONNX node found for the prediction layers {sorted(missing)}; "
                          "they would be quantized")
    return [n.name for n in nodes]


def cpu_int8_support() -> Optional[Dict[str, bool]]:
    """AVX2 / VNNI flags of this CPU (Linux ``/proc/cpuinfo``), None if unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    return {"avx2": "avx2" in flags, "vnni": bool({"avx512_vnni", "avx_vnni"} & set(flags))}


def quantized_node_counts(path: str) -> Dict[str, int]:
    """Nodes of :data:`QUANTIZED_OP_TYPES` in the QDQ model ``path`` whose weight is int8 (it comes
    from a ``DequantizeLinear``) and those left float."""
    graph = onnx.load(path).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    nodes = [n for n in graph.node if n.op_type in QUANTIZED_OP_TYPES]
    int8 = sum(len(n.input) > 1 and n.input[1] in dequantized for n in nodes)
    return {"int8": int8, "float": len(nodes) - int8}


def quantize_onnx(float_path: str, out_path: str, model: nn.Module, reader: CalibrationDataReader,
                  per_channel: bool = True, reduce_range: bool = False) -> Dict:
    """Write the int8 QDQ model of the float ONNX file ``float_path`` (exported from ``model``)
    to ``out_path``, calibrated on the pages of ``reader``. Returns what ``export_info.json``
    records under ``quantization``. Errors of onnxruntime become :class:`ExportError`."""
    with tempfile.TemporaryDirectory(prefix="dla_kd_quant_") as tmp:
        prepared = os.path.join(tmp, "prepared.onnx")
        try:
            # ORT's graph optimisation (constant folding, e.g. the FC biases) and ONNX shape inference;
            # symbolic shape inference cannot complete on the data-dependent shapes of top-k and NMS.
            quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
            excluded = float_layer_nodes(onnx.load(prepared).graph, float_layer_names(model))
            quantize_static(
                prepared, out_path, reader, quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OP_TYPES), nodes_to_exclude=excluded,
                per_channel=per_channel, reduce_range=reduce_range,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        except ExportError:
            raise
        except Exception as e:  # onnxruntime's errors name the node; keep them, say where
            raise ExportError(f"int8 quantization of {float_path} failed: {type(e).__name__}: {e}") from e
    return {
        "method": "onnxruntime.quantization.quantize_static, QDQ format",
        "activation_type": "uint8", "weight_type": "int8", "per_channel": per_channel, "reduce_range": reduce_range,
        "calibrate_method": "MinMax",
        "quantized_op_types": list(QUANTIZED_OP_TYPES),
        "nodes": quantized_node_counts(out_path),
        "float_nodes_excluded": excluded,
        "stays_float": STAYS_FLOAT,
        "cpu": cpu_int8_support(),
    }
