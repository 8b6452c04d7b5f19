"""Foreground / background maps on a feature level from ground-truth boxes (DeFeat, FGD).

Cell convention (stride ``s``): feature cell (i, j) covers image pixels [j*s, (j+1)*s) x
[i*s, (i+1)*s). A box (x1, y1, x2, y2) in padded-image pixels, first clipped to the padded image,
covers the cells

    x: floor(x1 / s) .. max(ceil(x2 / s) - 1, floor(x1 / s))   (inclusive)
    y: floor(y1 / s) .. max(ceil(y2 / s) - 1, floor(y1 / s))   (inclusive)

each clamped to [0, W-1] / [0, H-1]: every cell the box overlaps with positive area, and at least
one cell for a degenerate (zero-width / zero-height) box. Its area in cells is
``(x_hi - x_lo + 1) * (y_hi - y_lo + 1)``.

FGD (official ``FeatureLoss.forward``) instead rescales boxes by ``W / img_w`` and marks
``floor(x1')..ceil(x2')`` inclusive (one extra row / column), with area
``(ceil(x2')-floor(x1')+1) * (...)``; we use the stride mapping above, which is exact for
Detectron2's padded FPN levels, and count exactly the covered cells.
"""

from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch

# Bound on the (boxes x H x W) temporary of one chunk (elements); ~16 MB in float32.
_CHUNK_ELEMS = 1 << 22


class BoxMasks(NamedTuple):
    """Per-level maps, each (N, H, W) on the boxes' device.

    fg_mask: bool, True on cells covered by at least one box.
    fg_weight: float, FGD's foreground map: on a covered cell, the max over the covering boxes of
        1 / (box area in cells); 0 elsewhere.
    bg_weight: float, FGD's background map: 1 / (number of background cells of the image) on
        background cells, 0 on foreground cells (all 0 if the image has no background cell).
    """

    fg_mask: torch.Tensor
    fg_weight: torch.Tensor
    bg_weight: torch.Tensor


def _as_tensor(boxes) -> torch.Tensor:
    t = boxes.tensor if hasattr(boxes, "tensor") else boxes  # detectron2 Boxes
    return torch.as_tensor(t).reshape(-1, 4)


def box_cell_ranges(
    boxes: torch.Tensor,
    feature_hw: Tuple[int, int],
    stride: float,
    image_hw: Optional[Tuple[int, int]] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inclusive cell ranges covered by boxes (see the module docstring for the rule).

    boxes: (B, 4) XYXY image pixels. feature_hw: (H, W) of the level. stride: pixels per cell.
    image_hw: (H_img, W_img) the boxes are clipped to first (the padded image; None: no clip).
    Returns (x_lo, x_hi, y_lo, y_hi), each (B,) int64, 0 <= lo <= hi < W (or H).
    """
    h, w = int(feature_hw[0]), int(feature_hw[1])
    b = boxes.detach().to(torch.float64)  # float64: exact floor/ceil of pixel / stride
    x1, y1, x2, y2 = b.unbind(dim=1)
    if image_hw is not None:
        x1, x2 = x1.clamp(0, image_hw[1]), x2.clamp(0, image_hw[1])
        y1, y2 = y1.clamp(0, image_hw[0]), y2.clamp(0, image_hw[0])
    s = float(stride)
    x_lo = torch.floor(x1 / s)
    y_lo = torch.floor(y1 / s)
    x_hi = torch.maximum(torch.ceil(x2 / s) - 1, x_lo)
    y_hi = torch.maximum(torch.ceil(y2 / s) - 1, y_lo)
    x_lo, x_hi = x_lo.clamp(0, w - 1).long(), x_hi.clamp(0, w - 1).long()
    y_lo, y_hi = y_lo.clamp(0, h - 1).long(), y_hi.clamp(0, h - 1).long()
    return x_lo, x_hi, y_lo, y_hi


@torch.no_grad()
def box_masks(
    boxes_per_image: Sequence[Union[torch.Tensor, object]],
    image_size_hw_padded: Optional[Tuple[int, int]],
    feature_hw: Tuple[int, int],
    stride: float,
    dtype: torch.dtype = torch.float32,
    device: Optional[Union[str, torch.device]] = None,
) -> BoxMasks:
    """Vectorised fg mask and FGD fg / bg weight maps for a batch on one feature level.

    boxes_per_image: N entries, each (B_i, 4) XYXY boxes in padded-image pixels (a tensor or a
        detectron2 ``Boxes``); B_i may be 0.
    image_size_hw_padded: (H_img, W_img) of the padded batch; boxes are clipped to it
        (None: no clipping).
    feature_hw: (H, W) of the level; stride: its stride in pixels (4 for p2, ..., 64 for p6).
    dtype / device: of the weight maps (device default: the boxes').
    Returns :class:`BoxMasks` of (N, H, W) maps. No gradient (the maps are constants).

    All boxes of the batch are processed at once with a box -> image index; the only Python loop
    is over chunks of boxes bounding the (boxes, H, W) temporary.
    """
    n = len(boxes_per_image)
    h, w = int(feature_hw[0]), int(feature_hw[1])
    tensors = [_as_tensor(b) for b in boxes_per_image]
    if device is None:
        device = tensors[0].device if n else torch.device("cpu")
    sizes = [int(t.shape[0]) for t in tensors]
    total = sum(sizes)
    fg_weight = torch.zeros((n, h, w), dtype=dtype, device=device)
    if total > 0:
        boxes = torch.cat([t.to(device) for t in tensors], dim=0)
        counts = torch.tensor(sizes, dtype=torch.long, device=device)
        img_idx = torch.repeat_interleave(torch.arange(n, device=device), counts, output_size=total)
        x_lo, x_hi, y_lo, y_hi = box_cell_ranges(boxes, (h, w), stride, image_size_hw_padded)
        inv_area = 1.0 / ((x_hi - x_lo + 1) * (y_hi - y_lo + 1)).to(dtype)
        xs = torch.arange(w, device=device)
        ys = torch.arange(h, device=device)
        chunk = max(1, _CHUNK_ELEMS // max(1, h * w))
        fg_flat = fg_weight.view(n, h * w)
        for start in range(0, boxes.shape[0], chunk):
            sl = slice(start, start + chunk)
            in_x = (xs[None, :] >= x_lo[sl, None]) & (xs[None, :] <= x_hi[sl, None])  # (b, W)
            in_y = (ys[None, :] >= y_lo[sl, None]) & (ys[None, :] <= y_hi[sl, None])  # (b, H)
            cover = in_y[:, :, None] & in_x[:, None, :]  # (b, H, W)
            weights = (cover.to(dtype) * inv_area[sl, None, None]).reshape(cover.shape[0], h * w)
            index = img_idx[sl, None].expand(-1, h * w)
            fg_flat.scatter_reduce_(0, index, weights, "amax", include_self=True)
    fg_mask = fg_weight > 0
    bg = (~fg_mask).to(dtype)
    num_bg = bg.sum(dim=(1, 2), keepdim=True)
    bg_weight = torch.where(num_bg > 0, bg / num_bg.clamp(min=1), torch.zeros_like(bg))
    return BoxMasks(fg_mask, fg_weight, bg_weight)
