"""Box-regression KD on foreground RoIs: L2 on deltas, L1 / GIoU on decoded boxes."""

from typing import Optional

import torch

from ._utils import as_teacher, check_same_shape, connected_zero


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


def _fg_rows(x: torch.Tensor, fg_mask: Optional[torch.Tensor]) -> torch.Tensor:
    return x if fg_mask is None else x[fg_mask]


def box_delta_l2_loss(
    s_deltas: torch.Tensor,
    t_deltas: torch.Tensor,
    classes: torch.Tensor,
    num_classes: int,
    fg_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """L2 between the student's and teacher's regression deltas of one class per RoI.

    s_deltas, t_deltas: (R, 4K) class-specific or (R, 4) class-agnostic (same layout on both).
    classes: (R,) class whose deltas are compared (ground truth or teacher's top class; only read
    on foreground RoIs). num_classes: K (used to check the layout). fg_mask: (R,) bool, None = all.
    Loss = sum over fg RoIs and the 4 coordinates of (s - t)^2 / (4 * #fg), i.e. the mean over
    fg RoIs of (sum of squares / 4). No fg RoI: a graph-connected zero. Scalar.
    """
    check_same_shape(s_deltas, t_deltas, "box_delta_l2_loss")
    if s_deltas.shape[1] not in (4, 4 * num_classes):
        raise ValueError(f"deltas have {s_deltas.shape[1]} columns; expected 4 or 4*{num_classes}")
    s = _fg_rows(s_deltas, fg_mask)
    if s.shape[0] == 0:
        return connected_zero(s_deltas)
    t = _fg_rows(as_teacher(t_deltas, s_deltas), fg_mask)
    cls = _fg_rows(classes, fg_mask)
    s4, t4 = select_class_deltas(s, cls), select_class_deltas(t, cls)
    return (s4 - t4).pow(2).sum() / (4 * s4.shape[0])


def box_l1_loss(
    s_boxes: torch.Tensor, t_boxes: torch.Tensor, fg_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """L1 between decoded XYXY boxes (R, 4): mean over fg RoIs of mean_j |s_j - t_j| (pixels).

    fg_mask: (R,) bool, None = all rows. Empty: a graph-connected zero. Scalar.
    """
    check_same_shape(s_boxes, t_boxes, "box_l1_loss")
    s = _fg_rows(s_boxes, fg_mask)
    if s.shape[0] == 0:
        return connected_zero(s_boxes)
    t = _fg_rows(as_teacher(t_boxes, s_boxes), fg_mask)
    return (s - t).abs().mean()


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
    """GIoU loss between decoded XYXY boxes (R, 4): mean over fg RoIs of 1 - GIoU(s, t).

    Equals ``fvcore.nn.giou_loss(s, t, reduction="mean")`` (eps 1e-7) without its host-syncing
    validity asserts. Empty: a graph-connected zero. Scalar.
    """
    check_same_shape(s_boxes, t_boxes, "box_giou_loss")
    s = _fg_rows(s_boxes, fg_mask)
    if s.shape[0] == 0:
        return connected_zero(s_boxes)
    t = _fg_rows(as_teacher(t_boxes, s_boxes), fg_mask)
    return (1.0 - generalized_iou(s, t)).mean()
