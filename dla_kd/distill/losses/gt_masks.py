"""Foreground / background maps on a feature level from ground-truth boxes (DeFeat, FGD).

Cell rules (stride ``s``; feature cell (i, j) covers image pixels [j*s, (j+1)*s) x
[i*s, (i+1)*s)), chosen by name from :data:`CELL_RULES`. A box (x1, y1, x2, y2) in padded-image
pixels is first clipped to the padded image; every index is clamped to [0, W-1] / [0, H-1].

``"overlap"`` (ours; FGD here): every cell the box overlaps with positive area, and at least
one cell for a degenerate (zero-width / zero-height) box:

    x: floor(x1 / s) .. max(ceil(x2 / s) - 1, floor(x1 / s))   (inclusive; y alike)

``"defeat"`` (DeFeat's ``get_gt_mask``, ggjy/DeFeat.pytorch
``mmdet/models/dense_heads/anchor_head.py``): ``mask[int(y1/s):min(int(y2/s), H),
int(x1/s):min(int(x2/s), W)] = 1``, i.e. a last partly covered row / column is left out; a box
whose range is empty in x or in y marks the single cell (int(y1/s), int(x1/s)).

A box's area in cells is ``(x_hi - x_lo + 1) * (y_hi - y_lo + 1)`` of its inclusive ranges.

FGD (official ``FeatureLoss.forward``) instead rescales boxes by ``W / img_w`` and marks
``floor(x1')..ceil(x2')`` inclusive (one extra row / column), with area
``(ceil(x2')-floor(x1')+1) * (...)``; we use the "overlap" rule, which is exact for
Detectron2's padded FPN levels, and count exactly the covered cells.

DeFeat also puts each box on one FPN level only (:func:`defeat_box_levels`);
:func:`defeat_fg_masks` builds its per-level masks.
"""

from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

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


Ranges = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _overlap_cells(x1, y1, x2, y2, h: int, w: int) -> Ranges:
    """Ours: every overlapped cell, at least one. Inputs: box corners in cells (float64, (B,))."""
    x_lo, y_lo = torch.floor(x1), torch.floor(y1)
    x_hi = torch.maximum(torch.ceil(x2) - 1, x_lo)
    y_hi = torch.maximum(torch.ceil(y2) - 1, y_lo)
    return x_lo.clamp(0, w - 1), x_hi.clamp(0, w - 1), y_lo.clamp(0, h - 1), y_hi.clamp(0, h - 1)


def _defeat_cells(x1, y1, x2, y2, h: int, w: int) -> Ranges:
    """DeFeat's ``get_gt_mask``: [int(x1), min(int(x2), W)) x [int(y1), min(int(y2), H)); a box
    empty in x or y gives the single cell (int(y1), int(x1)). Inputs as :func:`_overlap_cells`."""
    x_lo, y_lo = torch.floor(x1).clamp(0, w - 1), torch.floor(y1).clamp(0, h - 1)
    x_end, y_end = torch.floor(x2).clamp(max=w), torch.floor(y2).clamp(max=h)
    single = (x_end <= x_lo) | (y_end <= y_lo)
    return x_lo, torch.where(single, x_lo, x_end - 1), y_lo, torch.where(single, y_lo, y_end - 1)


# Name -> rule (see the module docstring). A rule maps box corners in cell units to inclusive
# (x_lo, x_hi, y_lo, y_hi) cell ranges inside the (h, w) level.
CELL_RULES: Dict[str, Callable[..., Ranges]] = {"overlap": _overlap_cells, "defeat": _defeat_cells}


def box_cell_ranges(
    boxes: torch.Tensor,
    feature_hw: Tuple[int, int],
    stride: float,
    image_hw: Optional[Tuple[int, int]] = None,
    cell_rule: str = "overlap",
) -> Ranges:
    """Inclusive cell ranges covered by boxes under ``cell_rule`` (see the module docstring).

    boxes: (B, 4) XYXY image pixels. feature_hw: (H, W) of the level. stride: pixels per cell.
    image_hw: (H_img, W_img) the boxes are clipped to first (the padded image; None: no clip).
    Returns (x_lo, x_hi, y_lo, y_hi), each (B,) int64, 0 <= lo <= hi < W (or H).
    """
    if cell_rule not in CELL_RULES:
        raise KeyError(f"Unknown cell rule {cell_rule!r}; known: {sorted(CELL_RULES)}")
    h, w = int(feature_hw[0]), int(feature_hw[1])
    b = boxes.detach().to(torch.float64)  # float64: exact floor/ceil of pixel / stride
    x1, y1, x2, y2 = b.unbind(dim=1)
    if image_hw is not None:
        x1, x2 = x1.clamp(0, image_hw[1]), x2.clamp(0, image_hw[1])
        y1, y2 = y1.clamp(0, image_hw[0]), y2.clamp(0, image_hw[0])
    s = float(stride)
    return tuple(r.long() for r in CELL_RULES[cell_rule](x1 / s, y1 / s, x2 / s, y2 / s, h, w))


@torch.no_grad()
def box_masks(
    boxes_per_image: Sequence[Union[torch.Tensor, object]],
    image_size_hw_padded: Optional[Tuple[int, int]],
    feature_hw: Tuple[int, int],
    stride: float,
    device: Optional[Union[str, torch.device]] = None,
    cell_rule: str = "overlap",
    valid: Optional[torch.Tensor] = None,
    keep: Optional[Sequence[torch.Tensor]] = None,
) -> BoxMasks:
    """Vectorised fg mask and FGD fg / bg weight maps for a batch on one feature level.

    boxes_per_image: N entries, each (B_i, 4) XYXY boxes in padded-image pixels (a tensor or a
        detectron2 ``Boxes``); B_i may be 0.
    image_size_hw_padded: (H_img, W_img) of the padded batch; boxes are clipped to it
        (None: no clipping).
    feature_hw: (H, W) of the level; stride: its stride in pixels (4 for p2, ..., 64 for p6).
    device: of the maps (default: the boxes').
    cell_rule: which cells a box covers, a name in :data:`CELL_RULES`.
    valid: (N, H, W) bool cells of image content (``valid_cells``) or None for all; every map is
    0 outside it (the background of an image is its valid non-box cells).
    keep: N entries, each (B_i,) bool: only these boxes count (None: all); the same maps as
    passing the kept boxes alone, without data-dependent indexing (no host sync).
    Returns :class:`BoxMasks` of (N, H, W) maps. No gradient (the maps are constants).

    The weight maps are float32 whatever the features' dtype: in float16 a box of 65,520 or more
    cells would get area ``inf``, weight 0, and count as background (issue 35).
    All boxes of the batch are processed at once with a box -> image index; the only Python loop
    is over chunks of boxes bounding the (boxes, H, W) temporary. Nothing is read back to the
    host (box counts are the host-side lengths of the box tensors).
    """
    n = len(boxes_per_image)
    h, w = int(feature_hw[0]), int(feature_hw[1])
    tensors = [_as_tensor(b) for b in boxes_per_image]
    if device is None:
        device = tensors[0].device if n else torch.device("cpu")
    sizes = [int(t.shape[0]) for t in tensors]
    total = sum(sizes)
    fg_weight = torch.zeros((n, h, w), dtype=torch.float32, device=device)
    if total > 0:
        boxes = torch.cat([t.to(device) for t in tensors], dim=0)
        # Box -> image index from host-side counts (filled on the device: no host-to-device copy).
        img_idx = torch.cat([torch.full((k,), i, dtype=torch.long, device=device) for i, k in enumerate(sizes)])
        x_lo, x_hi, y_lo, y_hi = box_cell_ranges(boxes, (h, w), stride, image_size_hw_padded, cell_rule)
        inv_area = 1.0 / ((x_hi - x_lo + 1) * (y_hi - y_lo + 1)).to(torch.float32)
        if keep is not None:
            inv_area = inv_area * torch.cat([k.reshape(-1) for k in keep]).to(device=device, dtype=torch.float32)
        xs = torch.arange(w, device=device)
        ys = torch.arange(h, device=device)
        chunk = max(1, _CHUNK_ELEMS // max(1, h * w))
        fg_flat = fg_weight.view(n, h * w)
        for start in range(0, total, chunk):
            sl = slice(start, start + chunk)
            in_x = (xs[None, :] >= x_lo[sl, None]) & (xs[None, :] <= x_hi[sl, None])  # (b, W)
            in_y = (ys[None, :] >= y_lo[sl, None]) & (ys[None, :] <= y_hi[sl, None])  # (b, H)
            cover = in_y[:, :, None] & in_x[:, None, :]  # (b, H, W)
            weights = (cover.to(torch.float32) * inv_area[sl, None, None]).reshape(cover.shape[0], h * w)
            index = img_idx[sl, None].expand(-1, h * w)
            fg_flat.scatter_reduce_(0, index, weights, "amax", include_self=True)
    if valid is not None:
        fg_weight = fg_weight * valid.to(device)
    fg_mask = fg_weight > 0
    bg = (~fg_mask if valid is None else ~fg_mask & valid.to(device)).to(torch.float32)
    num_bg = bg.sum(dim=(1, 2), keepdim=True)
    bg_weight = torch.where(num_bg > 0, bg / num_bg.clamp(min=1), torch.zeros_like(bg))
    return BoxMasks(fg_mask, fg_weight, bg_weight)


# DeFeat's canonical box scale (``_map_roi_levels``): boxes below 2 x 56 px go to the finest level.
DEFEAT_CANONICAL_SCALE = 56.0


def defeat_box_levels(boxes: torch.Tensor, num_levels: int) -> torch.Tensor:
    """DeFeat's ``_map_roi_levels`` (ggjy/DeFeat.pytorch ``mmdet/models/dense_heads/anchor_head.py``).

    boxes: (B, 4) XYXY pixels. Returns (B,) int64 level indices into the distilled levels, finest
    first: ``floor(log2(sqrt((x2 - x1 + 1) * (y2 - y1 + 1)) / 56 + 1e-6))`` clamped to
    [0, num_levels - 1] (with p2..p6: < 112 px -> p2, < 224 -> p3, < 448 -> p4, < 896 -> p5).
    """
    b = _as_tensor(boxes).detach().float()  # float32 as the reference's gt boxes
    scale = torch.sqrt((b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1))
    levels = torch.floor(torch.log2(scale / DEFEAT_CANONICAL_SCALE + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).long()


def defeat_fg_masks(
    boxes_per_image: Sequence[Union[torch.Tensor, object]],
    image_size_hw_padded: Optional[Tuple[int, int]],
    feature_hws: Sequence[Tuple[int, int]],
    strides: Sequence[float],
    device: Optional[Union[str, torch.device]] = None,
) -> List[torch.Tensor]:
    """DeFeat's per-level ground-truth masks: each box marks, with the "defeat" cell rule, only
    the level :func:`defeat_box_levels` assigns it to.

    boxes_per_image: N entries of (B_i, 4) XYXY boxes (tensor or ``Boxes``) in padded-image pixels.
    feature_hws / strides: (H_l, W_l) and stride of each distilled level, finest first.
    Returns one bool (N, H_l, W_l) mask per level.

    Every level sees every box with a ``keep`` mask of the boxes assigned to it (masked
    arithmetic, no data-dependent indexing: nothing is read back to the host).
    """
    tensors = [_as_tensor(b) for b in boxes_per_image]
    levels = [defeat_box_levels(t, len(feature_hws)) for t in tensors]
    return [
        box_masks(
            tensors, image_size_hw_padded, hw, stride, device=device, cell_rule="defeat",
            keep=[lv == k for lv in levels],
        ).fg_mask
        for k, (hw, stride) in enumerate(zip(feature_hws, strides))
    ]
