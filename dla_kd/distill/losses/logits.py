"""Response-based KD on RoI class logits (Detectron2 layout: K foreground columns, background last).

``kd_loss`` is also the CrossKD loss: CrossKD (Wang et al., CVPR 2024) feeds the student's
box-head features through the teacher's frozen predictor and distils those "cross-head" logits
to the teacher's own logits; the loss itself is this KL with temperature.
"""

from typing import Optional

import torch
import torch.nn.functional as F

from ._utils import as_teacher, check_same_shape, connected_zero


def _weighted_mean(per_roi: torch.Tensor, weights: Optional[torch.Tensor]) -> torch.Tensor:
    if weights is None:
        return per_roi.sum() / per_roi.shape[0]
    if weights.shape != per_roi.shape:
        raise ValueError(f"weights shape {tuple(weights.shape)} != ({per_roi.shape[0]},)")
    return (weights.to(per_roi).detach() * per_roi).sum() / per_roi.shape[0]


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Hinton KD per RoI, optionally weighted.

    student_logits, teacher_logits: (R, K+1). kl_i = T^2 * KL(softmax(t_i/T) || softmax(s_i/T)).
    weights: optional (R,) (e.g. :func:`roi_weights`), constant. Returns
    ``sum_i w_i * kl_i / R`` (w = 1: the plain mean). R = 0: a graph-connected zero. Scalar.
    """
    check_same_shape(student_logits, teacher_logits, "kd_loss")
    if student_logits.shape[0] == 0:
        return connected_zero(student_logits)
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(as_teacher(teacher_logits, student_logits) / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1) * (temperature**2)  # (R,)
    return _weighted_mean(kl, weights)


def logit_mse_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """MSE between logits: x_i = mean_k (s_ik - t_ik)^2; returns ``sum_i w_i * x_i / R``.

    (R, K+1) inputs; weights optional (R,). R = 0: a graph-connected zero. Scalar.
    """
    check_same_shape(student_logits, teacher_logits, "logit_mse_loss")
    if student_logits.shape[0] == 0:
        return connected_zero(student_logits)
    per_roi = (student_logits - as_teacher(teacher_logits, student_logits)).pow(2).mean(dim=1)
    return _weighted_mean(per_roi, weights)


def roi_weights(
    gt_classes: torch.Tensor, num_classes: int, pos_weight: float = 1.0, neg_weight: float = 1.0
) -> torch.Tensor:
    """(R,) float weights: ``pos_weight`` where ``0 <= gt_class < num_classes`` (foreground RoI),
    ``neg_weight`` elsewhere (background: gt_class == num_classes in Detectron2)."""
    pos = (gt_classes >= 0) & (gt_classes < num_classes)
    return torch.where(
        pos,
        torch.full(gt_classes.shape, float(pos_weight), device=gt_classes.device),
        torch.full(gt_classes.shape, float(neg_weight), device=gt_classes.device),
    )
