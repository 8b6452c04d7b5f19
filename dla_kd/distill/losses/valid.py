"""Feature cells that hold image content (not batch padding), and reductions over them.

A batch is padded to its largest image. On a level of stride ``s`` an image of size (h, w)
covers the top-left ``ceil(h / s) x ceil(w / s)`` cells (a cell partly on the image counts).
Feature losses take such a ``valid`` mask, (N, H, W) bool, so that what they compare does not
depend on which images share the batch; ``valid=None`` means every cell is valid (and the losses
reduce exactly as without a mask).
"""
from typing import List, Optional, Sequence, Tuple

import torch


def valid_cells(
    image_sizes: Sequence[Tuple[int, int]], feature_hw: Tuple[int, int], stride: int, device=None
) -> Optional[torch.Tensor]:
    """(N, H, W) bool, True on cell (i, j) of image n iff i < ceil(h_n / stride) and
    j < ceil(w_n / stride); None when that is every cell of every image (no padding to ignore).

    image_sizes: (h_n, w_n) of each image before padding (``ImageList.image_sizes``);
    feature_hw: (H, W) of the level; stride: its stride in pixels.
    """
    h, w = int(feature_hw[0]), int(feature_hw[1])
    sizes = torch.as_tensor([tuple(s) for s in image_sizes], dtype=torch.long).reshape(-1, 2)
    rows = (sizes[:, 0] + stride - 1) // stride
    cols = (sizes[:, 1] + stride - 1) // stride
    if bool((rows >= h).all()) and bool((cols >= w).all()):
        return None
    inside_y = torch.arange(h)[None, :, None] < rows[:, None, None]
    inside_x = torch.arange(w)[None, None, :] < cols[:, None, None]
    return (inside_y & inside_x).to(device)


def valid_extents(valid: torch.Tensor) -> List[Tuple[int, int]]:
    """(rows, cols) of each image's valid top-left rectangle; valid: (N, H, W) bool."""
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
