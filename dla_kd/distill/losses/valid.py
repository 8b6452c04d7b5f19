"""Feature cells that hold image content (not batch padding), and reductions over them.

A batch is padded to its largest image. On a level of stride ``s`` an image of size (h, w)
covers the top-left ``ceil(h / s) x ceil(w / s)`` cells (a cell partly on the image counts).
Feature losses take such a ``valid`` mask, (N, H, W) bool, so that what they compare does not
depend on which images share the batch; ``valid=None`` means every cell is valid (and the losses
reduce exactly as without a mask).
"""
from typing import List, Optional, Sequence, Tuple

import torch


def image_extents(
    image_sizes: Sequence[Tuple[int, int]], feature_hw: Tuple[int, int], stride: int
) -> List[Tuple[int, int]]:
    """(rows, cols) of each image's cells on a level, computed on the host from the image sizes:
    (min(ceil(h_n / stride), H), min(ceil(w_n / stride), W)).

    image_sizes: (h_n, w_n) of each image before padding (``ImageList.image_sizes``, Python ints);
    feature_hw: (H, W) of the level; stride: its stride in pixels.
    """
    h, w = int(feature_hw[0]), int(feature_hw[1])
    s = int(stride)
    return [(min((int(ih) + s - 1) // s, h), min((int(iw) + s - 1) // s, w)) for ih, iw in image_sizes]


def valid_cells(
    image_sizes: Sequence[Tuple[int, int]], feature_hw: Tuple[int, int], stride: int, device=None
) -> Optional[torch.Tensor]:
    """(N, H, W) bool, True on cell (i, j) of image n iff i < ceil(h_n / stride) and
    j < ceil(w_n / stride); None when that is every cell of every image (no padding to ignore).

    image_sizes: (h_n, w_n) of each image before padding (``ImageList.image_sizes``);
    feature_hw: (H, W) of the level; stride: its stride in pixels. Built on ``device`` from the
    host-side sizes (:func:`image_extents`): no tensor is read back or copied to the device.
    """
    h, w = int(feature_hw[0]), int(feature_hw[1])
    extents = image_extents(image_sizes, (h, w), stride)
    if all(rows >= h and cols >= w for rows, cols in extents):
        return None
    valid = torch.zeros((len(extents), h, w), dtype=torch.bool, device=device)
    for n, (rows, cols) in enumerate(extents):
        valid[n, :rows, :cols] = True
    return valid


def valid_extents(valid: torch.Tensor) -> List[Tuple[int, int]]:
    """(rows, cols) of each image's valid top-left rectangle; valid: (N, H, W) bool. Reads the
    mask back to the host (a device sync on a GPU): in a training step use
    :func:`image_extents` of the host-side image sizes instead."""
    rows = valid.any(dim=2).sum(dim=1).tolist()
    cols = valid.any(dim=1).sum(dim=1).tolist()
    return list(zip(rows, cols))


def masked_sum(x: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
    """Sum of x (N, C, H, W) over the valid cells (all channels), in float32."""
    x = x.float()
    return x.sum() if valid is None else (x * valid[:, None]).sum()


def masked_mean(x: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of x (N, C, H, W) over the valid cells (all channels), in float32: the sum over
    valid cells / (C x number of valid cells). Equals ``x.mean()`` when valid is None."""
    if valid is None:
        return x.float().mean()
    return masked_sum(x, valid) / (valid.sum() * x.shape[1])
