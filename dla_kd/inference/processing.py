"""What the exported graph leaves to the caller, in Python: the same steps for a PyTorch model and
an exported one, so both give the same detections.

Before the graph (:func:`preprocess`): channel order RGB -> the model's ``INPUT.FORMAT``, resizing
the shortest side to ``INPUT.MIN_SIZE_TEST`` (longest side capped at ``MAX_SIZE_TEST``) with
Detectron2's ``ResizeShortestEdge`` as ``DefaultPredictor`` does, and HWC uint8 -> CHW float32.

After the graph (:func:`postprocess`): Detectron2's ``detector_postprocess``: boxes scaled from the
resized input back to the page and clipped, empty boxes dropped; the mask probabilities (N, 1, M, M)
are kept as :class:`.masks.PageMasks`, pasted into the page and thresholded one detection at a
time, into its box region only (``paste_masks_in_image``, the same pixels as Detectron2's
full-page paste, never an (N, H, W) tensor).
"""
from typing import Tuple

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances

from .masks import PageMasks
from .spec import ModelSpec


def preprocess(image_rgb: np.ndarray, spec: ModelSpec) -> torch.Tensor:
    """(H, W, 3) uint8 RGB page -> (3, h, w) float32 tensor in ``spec.input_format``, values in
    [0, 255], resized to the test size (h, w: the graph's input size)."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image_rgb.shape}")
    image = image_rgb
    if spec.min_size_test > 0:  # before the channel flip: PIL copies a flipped (strided) page slowly
        resize = T.ResizeShortestEdge([spec.min_size_test, spec.min_size_test], spec.max_size_test)
        image = resize.get_transform(image).apply_image(image)
    image = image[:, :, ::-1] if spec.input_format == "BGR" else image
    return torch.as_tensor(np.ascontiguousarray(image.astype("float32").transpose(2, 0, 1)))


def postprocess(raw: Instances, page_size: Tuple[int, int], spec: ModelSpec) -> Instances:
    """Raw graph outputs on the resized input -> detections on the page of size (H, W):
    ``pred_boxes`` (N, 4) XYXY page pixels, ``scores`` (N,), ``pred_classes`` (N,) contiguous ids,
    ``pred_masks`` (:class:`.masks.PageMasks`, pasted per detection on demand) if the model has masks."""
    height, width = int(page_size[0]), int(page_size[1])
    fields = raw.get_fields().copy()
    probs = fields.pop("pred_masks", None)
    if probs is not None:  # kept out of detector_postprocess, which would paste all at page size
        fields["mask_probs"] = probs[:, 0]
    results = detector_postprocess(Instances(raw.image_size, **fields), height, width, spec.mask_threshold)
    if probs is not None:
        results.pred_masks = PageMasks(results.mask_probs, results.pred_boxes.tensor, (height, width), spec.mask_threshold)
        results.remove("mask_probs")
    return results
