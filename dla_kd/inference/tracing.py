"""The traced function shared by the TorchScript and ONNX exports: one resized image in, the raw
detections of ``GeneralizedRCNN.inference(..., do_postprocess=False)`` out, flattened by
Detectron2's ``TracingAdapter`` into a tuple of tensors.

Inside the graph: pixel normalisation ((x - PIXEL_MEAN) / PIXEL_STD), padding to the backbone's
size divisibility, backbone (+ SimKD projector), RPN with its NMS, ROI heads (every stage for
Cascade) with score threshold, per-class NMS and top-k, mask head with its sigmoid.
"""
import contextlib
import warnings
from typing import Dict, List, Tuple

import torch
from detectron2.export import TracingAdapter
from detectron2.modeling import GeneralizedRCNN
from detectron2.structures import Boxes, Instances

INPUT_NAME = "image"
IMAGE_SIZE_OUTPUT = "image_size"

# name -> (shape, dtype, meaning). N detections, M the mask resolution (ROI_MASK_HEAD.POOLER_RESOLUTION * 2).
OUTPUT_MEANINGS: Dict[str, Tuple[str, str, str]] = {
    "pred_boxes": ("(N, 4)", "float32", "boxes XYXY in pixels of the input image (after resizing), clipped to it"),
    "pred_classes": ("(N,)", "int64", "contiguous class index 0..K-1 (see categories[].contiguous_id)"),
    "pred_masks": ("(N, 1, M, M)", "float32",
                   "mask probabilities (sigmoid applied) of the predicted class in the box frame; "
                   "paste into the page with paste_masks_in_image and threshold (0.5)"),
    "scores": ("(N,)", "float32", "class scores, sorted by decreasing score (after per-class NMS), >= SCORE_THRESH_TEST"),
    IMAGE_SIZE_OUTPUT: ("(2,)", "int64", "(height, width) of the input image the boxes refer to"),
}


def raw_inference(model: GeneralizedRCNN, image: torch.Tensor) -> Instances:
    """(3, h, w) float32 image in the model's input format, already resized -> raw Instances on
    it: ``pred_boxes``, ``scores``, ``pred_classes`` [, ``pred_masks`` (N, 1, M, M) probabilities]."""
    return model.inference([{"image": image}], do_postprocess=False)[0]


def tracing_adapter(model: GeneralizedRCNN, image: torch.Tensor) -> Tuple[TracingAdapter, List[str]]:
    """(adapter in eval mode, output names): the adapter maps ``image`` -> tuple of tensors
    ``(<Instances fields, sorted>..., image_size)``; it is run once here to learn the names."""
    if not isinstance(model, GeneralizedRCNN):
        raise TypeError(f"Only GeneralizedRCNN detectors are exported, got {type(model).__name__}")
    adapter = TracingAdapter(model.eval(), (image,), raw_inference).eval()
    with torch.no_grad():
        adapter(*adapter.flattened_inputs)
    schema = adapter.outputs_schema  # InstancesSchema: the sorted field names, then the image size
    return adapter, list(schema.keys) + [IMAGE_SIZE_OUTPUT]


def outputs_to_instances(outputs: Dict[str, torch.Tensor]) -> Instances:
    """Flat outputs by name (tensors) -> raw Instances, as :func:`raw_inference` returns them."""
    size = tuple(int(v) for v in outputs[IMAGE_SIZE_OUTPUT])
    fields = {k: v for k, v in outputs.items() if k != IMAGE_SIZE_OUTPUT}
    if "pred_boxes" in fields:
        fields["pred_boxes"] = Boxes(fields["pred_boxes"])
    return Instances(size, **fields)


@contextlib.contextmanager
def quiet_tracing():
    """Silence the TracerWarnings a detector trace emits (asserts and shape reads, which the
    adapter makes generalise to other image sizes) and the ONNX exporter's notes on indexing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="torch.meshgrid: in an upcoming release")
        # ONNX: boolean/advanced indexing of boxes and scores; indices are never negative here
        warnings.filterwarnings("ignore", message="Exporting aten::index operator of advanced indexing")
        yield
