"""Response-based KD on RoI class logits (Detectron2 layout: K foreground columns, background last).

``kd_loss`` is also CrossKD's classification term (its prediction is the teacher's box head run on
the student's features; see ``distillers.roi.CrossKDDistiller``).

RoI reduction (:func:`decoupled_mean`): the plain mean over all RoIs, or, when positive / negative
RoI weights other than 1 / 1 are given, DeFeat's decoupled form with each group normalised by its
own RoI count (ggjy/DeFeat.pytorch, ``mmdet/apis/train.py``: ``KLDivergenceLoss`` with a mask and
the "KL-decouple" branch of ``batch_processor_kd``).

Every loss computes in float32 whatever autocast made of the logits.
"""

from typing import Optional

import torch
import torch.nn.functional as F

from ._utils import check_same_shape, connected_zero, float32_pair


def decoupled_mean(
    per_roi: torch.Tensor,
    pos_mask: Optional[torch.Tensor] = None,
    pos_weight: float = 1.0,
    neg_weight: float = 1.0,
) -> torch.Tensor:
    """Reduce a per-RoI loss ``x`` (R,) to a scalar.

    ``pos_mask`` None or ``pos_weight == neg_weight == 1``: the plain mean ``sum_i x_i / R``.
    Otherwise DeFeat's decoupled reduction: ``pos_weight * mean_{i in pos} x_i +
    neg_weight * mean_{i in neg} x_i`` (pos_mask (R,) bool: foreground RoIs; neg = the rest), an
    empty group adding 0 (DeFeat: its released weights are 2 / 2, ``head_cls_w`` /
    ``head_cls_back_w`` in configs/kd_faster_rcnn/voc_stu_faster_rcnn_r50_decouple_neck.py).
    R = 0: a graph-connected zero. No host sync (masked sums, no boolean indexing).
    """
    if per_roi.shape[0] == 0:
        return connected_zero(per_roi)
    if pos_mask is None or (pos_weight == 1.0 and neg_weight == 1.0):
        return per_roi.sum() / per_roi.shape[0]
    if pos_mask.shape != per_roi.shape:
        raise ValueError(f"pos_mask shape {tuple(pos_mask.shape)} != ({per_roi.shape[0]},)")
    pos = pos_mask.to(device=per_roi.device, dtype=torch.bool)
    total = connected_zero(per_roi)
    zero = per_roi.new_zeros(())
    for mask, weight in ((pos, pos_weight), (~pos, neg_weight)):
        # Masked sum, not per_roi[mask]: boolean indexing reads the group's size back to the host.
        total = total + weight * torch.where(mask, per_roi, zero).sum() / mask.sum().clamp(min=1)
    return total


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    pos_mask: Optional[torch.Tensor] = None,
    pos_weight: float = 1.0,
    neg_weight: float = 1.0,
) -> torch.Tensor:
    """Hinton KD per RoI, reduced by :func:`decoupled_mean`.

    student_logits, teacher_logits: (R, K+1). kl_i = T^2 * KL(softmax(t_i/T) || softmax(s_i/T))
    (summed over the K+1 classes). Defaults: ``sum_i kl_i / R``. R = 0: a graph-connected zero.
    Scalar.
    """
    check_same_shape(student_logits, teacher_logits, "kd_loss")
    student_logits, teacher_logits = float32_pair(student_logits, teacher_logits)
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1) * (temperature**2)  # (R,)
    return decoupled_mean(kl, pos_mask, pos_weight, neg_weight)


def logit_mse_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    pos_mask: Optional[torch.Tensor] = None,
    pos_weight: float = 1.0,
    neg_weight: float = 1.0,
) -> torch.Tensor:
    """MSE between logits: x_i = mean_k (s_ik - t_ik)^2, reduced by :func:`decoupled_mean`
    (defaults: ``sum_i x_i / R``). (R, K+1) inputs. R = 0: a graph-connected zero. Scalar.
    """
    check_same_shape(student_logits, teacher_logits, "logit_mse_loss")
    student_logits, teacher_logits = float32_pair(student_logits, teacher_logits)
    per_roi = (student_logits - teacher_logits).pow(2).mean(dim=1)
    return decoupled_mean(per_roi, pos_mask, pos_weight, neg_weight)
