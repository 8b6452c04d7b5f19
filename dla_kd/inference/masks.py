"""Masks of the detections on a page, pasted one detection at a time into its box region only.

Detectron2's ``detector_postprocess`` pastes all N mask probabilities (N, 1, M, M) into an
(N, H, W) tensor: 8 GB for 100 detections on a 10000 x 8000 page. :class:`PageMasks` keeps the
probabilities and the page boxes instead; :meth:`PageMasks.crop` pastes one mask into the region
Detectron2's CPU path pastes it into (the box, one pixel wider on each side, clipped to the page),
with ``paste_masks_in_image`` on that region and the box shifted by a whole number of pixels, so
the pixels are exactly those of the full-page paste (the shift is exact in float32).
"""
import math
from typing import Tuple

import numpy as np
import torch
from detectron2.layers.mask_ops import paste_masks_in_image


class PageMasks:
    """The masks of N detections on a page of ``image_size`` (H, W): ``probs`` (N, M, M) mask
    probabilities in the box frames, ``boxes`` (N, 4) XYXY page pixels, binarised at ``threshold``.

    An ``Instances`` field (``pred_masks``): indexing selects detections, like a tensor's rows.
    """

    def __init__(self, probs: torch.Tensor, boxes: torch.Tensor, image_size: Tuple[int, int], threshold: float = 0.5):
        if probs.dim() != 3 or len(probs) != len(boxes):
            raise ValueError(f"expected (N, M, M) probabilities for {len(boxes)} boxes, got {tuple(probs.shape)}")
        self.probs, self.boxes = probs, boxes
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.threshold = threshold

    def __len__(self) -> int:
        return len(self.probs)

    def __getitem__(self, item) -> "PageMasks":
        probs, boxes = self.probs[item], self.boxes[item]
        if probs.dim() == 2:  # an integer index: keep one detection
            probs, boxes = probs[None], boxes[None]
        return PageMasks(probs, boxes, self.image_size, self.threshold)

    def to(self, device) -> "PageMasks":
        return PageMasks(self.probs.to(device), self.boxes.to(device), self.image_size, self.threshold)

    def __repr__(self) -> str:
        return f"PageMasks(num_instances={len(self)}, image_size={self.image_size})"

    def resized(self, height: int, width: int) -> "PageMasks":
        """The same masks on the page resized to (``height``, ``width``): pasted at that resolution."""
        scale = torch.tensor([width / self.image_size[1], height / self.image_size[0]] * 2, dtype=self.boxes.dtype)
        return PageMasks(self.probs, self.boxes * scale.to(self.boxes.device), (height, width), self.threshold)

    def crop(self, k: int) -> Tuple[np.ndarray, Tuple[int, int]]:
        """Mask of detection ``k`` in its region: ((h, w) bool array, (x0, y0) of the region on
        the page). The page mask is this array at that offset, False elsewhere."""
        height, width = self.image_size
        x0, y0, x1, y1 = (float(v) for v in self.boxes[k].cpu())
        left, top = max(math.floor(x0) - 1, 0), max(math.floor(y0) - 1, 0)
        right, bottom = min(math.ceil(x1) + 1, width), min(math.ceil(y1) + 1, height)
        box = self.boxes[k:k + 1].cpu() - torch.tensor([left, top, left, top], dtype=self.boxes.dtype)
        mask = paste_masks_in_image(self.probs[k:k + 1].cpu(), box, (bottom - top, right - left), self.threshold)
        return mask[0].numpy(), (left, top)

    def paste(self, k: int) -> np.ndarray:
        """(H, W) bool mask of detection ``k`` on the page (one page-sized array)."""
        crop, (x0, y0) = self.crop(k)
        page = np.zeros(self.image_size, dtype=bool)
        page[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
        return page
