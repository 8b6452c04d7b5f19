"""ONNX symbolics that make the ops of Detectron2 detectors export correctly (scoped to one export).

``aten::group_norm``: torch's own symbolic (``symbolic_opset9.group_norm``) reshapes the input
(N, C, *) to ``[0, G, -1]``. With N = 0 (a page without detections reaching a GroupNorm mask
head, ``MODEL.ROI_MASK_HEAD.NORM: GN``) the ``-1`` cannot be inferred from an empty tensor and
onnxruntime fails in ``Reshape`` ("The input tensor cannot be reshaped to the requested shape.
Input shape:{0,256,14,14}, requested shape:{0,32,-1}"). This symbolic computes the target shape
``[N, G, C/G * prod(spatial)]`` from ``Shape(x)`` instead, which is valid for N = 0 too.
"""
import contextlib

import torch
from torch.onnx import symbolic_helper

_GROUP_NORM = "aten::group_norm"


def _const(g, values, dtype=torch.long):
    return g.op("Constant", value_t=torch.tensor(values, dtype=dtype))


@symbolic_helper.parse_args("v", "i", "v", "v", "f", "i")
def group_norm_symbolic(g, input, num_groups, weight, bias, eps, cudnn_enabled):
    """GroupNorm of (N, C, *) as InstanceNormalization of (N, G, C/G * prod(*)), then affine."""
    dtype = input.type().dtype() if input.type().dtype() is not None else torch.float32
    shape = g.op("Shape", input)
    batch = g.op("Slice", shape, _const(g, [0]), _const(g, [1]))
    rest = g.op("ReduceProd", g.op("Slice", shape, _const(g, [1]), _const(g, [2**62])), keepdims_i=1)
    per_group = g.op("Div", rest, _const(g, [num_groups]))
    grouped = g.op("Reshape", input, g.op("Concat", batch, _const(g, [num_groups]), per_group, axis_i=0))
    ones, zeros = _const(g, [1.0] * num_groups, dtype), _const(g, [0.0] * num_groups, dtype)
    normed = g.op("Reshape", g.op("InstanceNormalization", grouped, ones, zeros, epsilon_f=eps), shape)
    rank = symbolic_helper._get_tensor_rank(input)
    if rank is None:
        return symbolic_helper._unimplemented("group_norm", "unknown input rank", input)
    affine_shape = _const(g, [-1] + [1] * (rank - 2))  # (C, 1, ..., 1): broadcast over (N, C, *)
    if not (weight is None or weight.node().mustBeNone()):
        normed = g.op("Mul", normed, g.op("Reshape", weight, affine_shape))
    if not (bias is None or bias.node().mustBeNone()):
        normed = g.op("Add", normed, g.op("Reshape", bias, affine_shape))
    return normed


@contextlib.contextmanager
def detectron2_onnx_symbolics(opset: int):
    """Register the symbolics above for the duration of one ``torch.onnx.export`` call."""
    torch.onnx.register_custom_op_symbolic(_GROUP_NORM, group_norm_symbolic, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic(_GROUP_NORM, opset)
