"""``export_info.json``: what is in an exported file and how to call it.

Keys: ``format``, ``file``, ``file_size_bytes``, ``export_method``, ``onnx_opset`` (ONNX),
``architecture``, ``input`` (name, shape, dtype, channel order, value range, test size, whether
pixel mean/std are baked in), ``outputs`` (name, shape, dtype, meaning, in order), ``in_graph``
and ``left_to_caller`` (the steps on each side), ``class_names``, ``spec`` (a
:class:`.spec.ModelSpec`: what :func:`.runtime.load_exported` needs), ``student`` (tensor counts),
``source`` (config and weights exported), ``versions``, ``budget`` (test-time budget: preset,
overrides, values in the graph and on the caller's side, see :mod:`.budget`) and ``check`` (the
comparison with PyTorch). int8 exports add ``quantization`` (see :mod:`.quantize`; ``file`` is
then the int8 model, ``quantization.float_file`` the float one) and ``int8_check`` (bbox AP of
both, their delta, or why AP was not checked; see :mod:`.ap_check`).
"""
import json
import os
from typing import Dict, List, Optional

import torch

from .._version import __version__
from ..utils.files import atomic_write_json
from .spec import ModelSpec
from .tracing import INPUT_NAME, OUTPUT_MEANINGS

EXPORT_INFO_FILE = "export_info.json"

EXPORT_METHODS = {
    "torchscript": "tracing: detectron2.export.TracingAdapter over GeneralizedRCNN.inference(do_postprocess=False)",
    "onnx": "tracing: detectron2.export.TracingAdapter over GeneralizedRCNN.inference(do_postprocess=False), "
            "torch.onnx.export",
    "torchscript-script": "scripting: detectron2.export.scripting_with_instances over "
                          "GeneralizedRCNN.inference(do_postprocess=False)",
}
CALLS = {
    "torchscript": "torch.jit.load(file)(image) -> tuple of the outputs, in order",
    "onnx": "onnxruntime.InferenceSession(file).run(None, {'image': image}) -> list of the outputs, in order",
    "torchscript-script": "torch.jit.load(file)(({'image': image}, ...)) -> one dict of the outputs per image "
                          "(image_size: the input's (h, w))",
}

IN_GRAPH = [
    "pixel normalisation (x - pixel_mean) / pixel_std (constants of the config, see input)",
    "padding to a multiple of input.size_divisibility",
    "backbone and FPN (+ the SimKD projector for SimKD students)",
    "RPN: anchors, box decoding, top-k and NMS of proposals",
    "ROI heads (all stages for Cascade R-CNN): RoIAlign, box regression, softmax scores, "
    "score threshold (spec.score_thresh_test), per-class NMS (spec.nms_thresh_test), "
    "top-k (spec.detections_per_image)",
    "mask head (if spec.mask_on): RoIAlign, mask logits of the predicted class, sigmoid",
]
LEFT_TO_CALLER = [
    "decode the page and give it in input.format channel order, as float32 (3, h, w) in [0, 255]",
    "resize the shortest side to input.min_size_test (longest side <= input.max_size_test), "
    "bilinear as detectron2.data.transforms.ResizeShortestEdge; one image per call",
    "scale pred_boxes from the input size (output image_size) back to the page size and clip them; "
    "drop empty boxes (detectron2.modeling.postprocessing.detector_postprocess)",
    "paste pred_masks (N, 1, M, M) probabilities into the page at the scaled boxes and threshold "
    "them at spec.mask_threshold (detectron2.layers.mask_ops.paste_masks_in_image)",
    "map pred_classes (contiguous) to dataset category ids and names with spec.categories",
    "any score threshold above spec.score_thresh_test (thresholds, NMS and top-k are fixed at export)",
]


def library_versions() -> Dict[str, str]:
    import detectron2
    import torchvision

    versions = {"torch": torch.__version__, "torchvision": torchvision.__version__,
                "detectron2": detectron2.__version__, "dla_kd": __version__}
    for name in ("onnx", "onnxruntime"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    return versions


def build_export_info(
    fmt: str, path: str, spec: ModelSpec, output_names: List[str], model: torch.nn.Module,
    architecture: Dict, source: Dict, opset: Optional[int] = None,
) -> Dict:
    """The export info of the file ``path`` (``check`` is added by the caller)."""
    n_params = sum(p.numel() for p in model.parameters())
    info = {
        "format": fmt,
        "file": os.path.basename(path),
        "file_size_bytes": os.path.getsize(path),
        "export_method": EXPORT_METHODS[fmt],
    }
    if opset is not None:
        info["onnx_opset"] = opset
    info.update({
        "architecture": architecture,
        "input": {
            "name": INPUT_NAME, "shape": "(3, h, w)", "dtype": "float32", "value_range": [0, 255],
            "call": CALLS[fmt],
            "format": spec.input_format, "min_size_test": spec.min_size_test, "max_size_test": spec.max_size_test,
            "normalization_in_graph": True, "pixel_mean": spec.pixel_mean, "pixel_std": spec.pixel_std,
            "size_divisibility": spec.size_divisibility,
        },
        "outputs": [
            {"name": n, "shape": OUTPUT_MEANINGS[n][0], "dtype": OUTPUT_MEANINGS[n][1], "meaning": OUTPUT_MEANINGS[n][2]}
            for n in output_names
        ],
        "in_graph": IN_GRAPH,
        "left_to_caller": LEFT_TO_CALLER,
        "class_names": spec.class_names,
        "spec": spec.to_dict(),
        "student": {
            "parameters": n_params,
            "tensors": len(list(model.parameters())) + len(list(model.buffers())),
        },
        "source": source,
        "versions": library_versions(),
    })
    return info


def write_export_info(info: Dict, folder: str) -> str:
    path = os.path.join(folder, EXPORT_INFO_FILE)
    atomic_write_json(path, info, indent=2)
    return path


def read_export_info(folder: str) -> Dict:
    with open(os.path.join(folder, EXPORT_INFO_FILE)) as f:
        info = json.load(f)
    for key in ("format", "file", "outputs", "spec"):
        if key not in info:
            raise KeyError(f"missing key {key!r}")
    return info
