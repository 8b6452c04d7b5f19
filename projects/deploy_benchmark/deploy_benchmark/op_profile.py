"""Where an ONNX graph spends its time: onnxruntime's profiler, summed per op type.

int8 quantization (:mod:`.quantize`) only replaces the ``Conv``/``Gemm``/``MatMul`` nodes that
compute features; the rest of the graph (GroupNorm, activations, RoIAlign, box decoding, NMS, mask
pasting) runs as in the float model, plus the ``QuantizeLinear``/``DequantizeLinear`` around each
quantized node. So the float graph's share of time in those op types bounds what int8 can gain
(Amdahl): with share ``s``, even int8 convolutions that took no time at all would make the graph
at most ``1 / (1 - s)`` times faster. :func:`int8_speedup_bound` computes it from a float profile.
"""
import json
import os
import tempfile
from collections import Counter
from typing import Dict

import numpy as np

from dla_kd.export.quantize import QUANTIZED_OP_TYPES
from dla_kd.inference.runtime import onnx_session_options
from dla_kd.inference.tracing import INPUT_NAME


def onnx_op_times(path: str, image: np.ndarray, threads: int = 1, runs: int = 3, warmup: int = 1) -> Dict[str, float]:
    """Milliseconds per call spent in each op type of the ONNX model ``path`` on ``image`` ((3, h, w)
    float32, the model's input), from onnxruntime's node kernel times averaged over ``runs`` calls
    after ``warmup`` unprofiled ones (profiling only starts with the session, so warm-up calls run
    in a session of their own first: the timed session's first call still pays its allocations,
    which is why ``runs`` should be 3 or more). Sorted by time, largest first."""
    import onnxruntime as ort

    def session(profile_prefix=None):
        options = onnx_session_options(threads)
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    feed = {INPUT_NAME: np.ascontiguousarray(image, dtype=np.float32)}
    warm = session()
    for _ in range(warmup):
        warm.run(None, feed)
    del warm
    with tempfile.TemporaryDirectory() as folder:
        profiled = session(os.path.join(folder, "ort_profile"))
        for _ in range(runs):
            profiled.run(None, feed)
        with open(profiled.end_profiling()) as f:  # the prefix is absolute, so is the file's path
            events = json.load(f)
    totals = Counter()
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"] / 1e3 / runs  # microseconds -> ms per call
    return dict(totals.most_common())


# The float graph's op types that int8 can replace, as onnxruntime's CPU provider names them after
# its graph optimisations: the quantized types, their fused forms (Conv + activation -> FusedConv)
# and the NCHWc layout conversions onnxruntime puts around float convolutions (ReorderInput/Output;
# int8 convolutions have their own, counted in the int8 graph).
INT8_REPLACEABLE_OPS = tuple(QUANTIZED_OP_TYPES) + tuple(f"Fused{op}" for op in QUANTIZED_OP_TYPES) + (
    "ReorderInput", "ReorderOutput")


def quantizable_share(op_ms: Dict[str, float]) -> float:
    """Share (0-1) of a float graph's node time in :data:`INT8_REPLACEABLE_OPS` (an upper bound of
    what int8 replaces: the prediction layers among them stay float)."""
    total = sum(op_ms.values())
    return sum(op_ms.get(op, 0.0) for op in INT8_REPLACEABLE_OPS) / total if total > 0 else 0.0


def int8_speedup_bound(op_ms: Dict[str, float]) -> float:
    """The largest speedup int8 could bring to the float graph profiled in ``op_ms``: its time
    outside the quantizable op types stays (``inf`` when there is none)."""
    rest = 1.0 - quantizable_share(op_ms)
    return 1.0 / rest if rest > 0 else float("inf")
