"""Box-regression KD: L2 / L1 on box deltas, GIoU on decoded boxes, CrossKD's score-weighted L1.

``box_delta_l2_loss``, ``box_l1_loss`` and ``box_giou_loss`` are normalised as Detectron2's
``FastRCNNOutputLayers.box_reg_loss`` (detectron2/modeling/roi_heads/fast_rcnn.py): summed over
the foreground RoIs (and the 4 coordinates), divided by the number R of all sampled RoIs given.
"""

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ._utils import check_same_shape, connected_zero, float32_pair


def select_class_deltas(deltas: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(R, 4K) class-specific deltas (Detectron2 layout: class k at columns 4k..4k+3) -> (R, 4)
    of the given classes (R,) int64; (R, 4) class-agnostic deltas are returned as they are.
    ``classes`` must lie in [0, K) for class-specific deltas."""
    if deltas.shape[1] == 4:
        return deltas
    if deltas.shape[1] % 4:
        raise ValueError(f"box deltas must have 4 or 4K columns, got {deltas.shape[1]}")
    idx = classes.long()[:, None] * 4 + torch.arange(4, device=deltas.device)[None, :]
    return deltas.gather(1, idx)


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(R,) row mask broadcastable against ``like`` (R, ...)."""
    return mask.reshape((-1,) + (1,) * (like.dim() - 1))


def _sum_fg_over_all(s, t, fg_mask, what: str, per_element: Callable) -> torch.Tensor:
    """Detectron2's ``box_reg_loss`` reduction: ``per_element(s_fg, t_fg)`` summed over the fg
    rows, divided by R (all rows of ``s``), in float32. R = 0: a graph-connected zero.

    The fg rows are selected by masked arithmetic, not ``x[fg_mask]`` (boolean indexing reads
    the number of rows back to the host): every row is computed, the teacher of a background
    row is replaced by the student's own detached value (a finite, zero-gradient comparison)
    and background rows are zeroed before the sum. Same value as the indexed form up to the
    order of the float32 sum."""
    check_same_shape(s, t, what)
    if s.shape[0] == 0:
        return connected_zero(s)
    s, t = float32_pair(s, t)
    if fg_mask is None:
        return per_element(s, t).sum() / s.shape[0]
    fg = fg_mask.to(device=s.device, dtype=torch.bool)
    per = per_element(s, torch.where(_rows(fg, t), t, s.detach()))
    return torch.where(_rows(fg, per), per, per.new_zeros(())).sum() / s.shape[0]


def box_delta_l2_loss(
    s_deltas: torch.Tensor,
    t_deltas: torch.Tensor,
    classes: torch.Tensor,
    num_classes: int,
    fg_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Squared error between the student's and teacher's regression deltas of one class per RoI.

    s_deltas, t_deltas: (R, 4K) class-specific or (R, 4) class-agnostic (same layout on both).
    classes: (R,) class whose deltas are compared (ground truth or teacher's top class; only read
    on foreground RoIs). num_classes: K (checks the layout).
    fg_mask: (R,) bool, None = all. Loss = sum over fg RoIs and the 4 coordinates of (s - t)^2,
    divided by R (all rows). R = 0: a graph-connected zero. Scalar.
    """
    check_same_shape(s_deltas, t_deltas, "box_delta_l2_loss")
    if s_deltas.shape[1] not in (4, 4 * num_classes):
        raise ValueError(f"deltas have {s_deltas.shape[1]} columns; expected 4 or 4*{num_classes}")
    cls = classes.clamp(0, num_classes - 1)  # background rows: any column, left out by fg_mask
    s4, t4 = select_class_deltas(s_deltas, cls), select_class_deltas(t_deltas, cls)
    return _sum_fg_over_all(s4, t4, fg_mask, "box_delta_l2_loss", lambda a, b: (a - b).pow(2))


def box_l1_loss(
    s_deltas: torch.Tensor, t_deltas: torch.Tensor, fg_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """L1 between (R, 4) box deltas (one class per RoI, one box transform on both sides): sum over
    fg RoIs and the 4 coordinates of |s - t|, divided by R (all rows), as Detectron2's L1
    ``box_reg_loss`` (smooth L1 with beta 0). fg_mask: (R,) bool, None = all rows. R = 0: a
    graph-connected zero. Scalar.
    """
    return _sum_fg_over_all(s_deltas, t_deltas, fg_mask, "box_l1_loss", lambda a, b: (a - b).abs())


def generalized_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Element-wise GIoU of XYXY boxes a, b (R, 4) -> (R,) (same formula as fvcore giou_loss)."""
    ax1, ay1, ax2, ay2 = a.unbind(dim=1)
    bx1, by1, bx2, by2 = b.unbind(dim=1)
    iw = (torch.min(ax2, bx2) - torch.max(ax1, bx1)).clamp(min=0)
    ih = (torch.min(ay2, by2) - torch.max(ay1, by1)).clamp(min=0)
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    iou = inter / (union + eps)
    cw = torch.max(ax2, bx2) - torch.min(ax1, bx1)
    ch = torch.max(ay2, by2) - torch.min(ay1, by1)
    enclose = cw * ch
    return iou - (enclose - union) / (enclose + eps)


def box_giou_loss(
    s_boxes: torch.Tensor, t_boxes: torch.Tensor, fg_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """GIoU loss between decoded XYXY boxes (R, 4): sum over fg RoIs of 1 - GIoU(s, t), divided by
    R (all rows), as Detectron2's "giou" ``box_reg_loss``; per box the same as
    ``fvcore.nn.giou_loss`` (eps 1e-7) without its host-syncing validity asserts. R = 0: a
    graph-connected zero. Scalar.
    """
    return _sum_fg_over_all(s_boxes, t_boxes, fg_mask, "box_giou_loss", lambda a, b: 1.0 - generalized_iou(a, b))


def crosskd_box_loss(
    cross_deltas: torch.Tensor, t_deltas: torch.Tensor, t_logits: torch.Tensor
) -> torch.Tensor:
    """CrossKD's box-regression KD (jbwang1997/CrossKD, branch faster-rcnn,
    mmdet/models/detectors/crosskd_two_stage.py, ``bbox_loss_with_kd``, the "l1 loss" block).

    On every RoI (foreground and background), with p = softmax(t_logits) over the K+1 classes,
    the teacher's top foreground class k_i = argmax_{k<K} p_ik and its probability
    w_i = max_{k<K} p_ik: ``sum_i w_i * sum_j |c_ij - t_ij| / (4 * sum_i w_i + eps)`` on the
    deltas of class k_i (mmdet ``L1Loss`` with ``weight=w[:, None]``, ``avg_factor=4 * sum(w)``;
    eps = float32 eps as mmdet's ``weight_reduce_loss``). Both deltas come from one predictor (the
    teacher's), so they share a box transform.

    cross_deltas, t_deltas: (R, 4K) class-specific or (R, 4) class-agnostic; t_logits: (R, K+1).
    R = 0: a graph-connected zero. Scalar.
    """
    check_same_shape(cross_deltas, t_deltas, "crosskd_box_loss")
    num_classes = t_logits.shape[1] - 1
    if cross_deltas.shape[1] not in (4, 4 * num_classes):
        raise ValueError(f"deltas have {cross_deltas.shape[1]} columns; expected 4 or 4*{num_classes}")
    if cross_deltas.shape[0] == 0:
        return connected_zero(cross_deltas)
    cross_deltas, t_deltas = float32_pair(cross_deltas, t_deltas)
    probs = F.softmax(t_logits.detach().float(), dim=1)[:, :num_classes]
    weights, classes = probs.max(dim=1)
    c4 = select_class_deltas(cross_deltas, classes)
    t4 = select_class_deltas(t_deltas, classes)
    eps = torch.finfo(torch.float32).eps
    return (weights[:, None] * (c4 - t4).abs()).sum() / (4 * weights.sum() + eps)
