"""Mask-head KD (Mask R-CNN): the mask-logit MSE of ``mask_kd`` (ours: no paper or reference
implementation of this form was found, see ``distillers.roi.MaskKDDistiller``) and CrossKD's
mask term (``kd_quality_focal_loss``)."""

import torch
import torch.nn.functional as F

from ._utils import check_same_shape, connected_zero, float32_pair


def mask_logit_kd_loss(
    s_mask_logits: torch.Tensor, t_mask_logits: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """MSE between the student's and teacher's mask logits of one class per RoI.

    s_mask_logits, t_mask_logits: (R, K, M, M) class-specific or (R, 1, M, M) class-agnostic.
    classes: (R,) int64 in [0, K) (ground-truth classes of the foreground RoIs; ignored when
    class-agnostic). Loss: mean over R*M*M of (s - t)^2 on the selected channel. R = 0: a
    graph-connected zero. Scalar.
    """
    check_same_shape(s_mask_logits, t_mask_logits, "mask_logit_kd_loss")
    r = s_mask_logits.shape[0]
    if r == 0:
        return connected_zero(s_mask_logits)
    if s_mask_logits.shape[1] == 1:
        s, t = s_mask_logits[:, 0], t_mask_logits[:, 0]
    else:
        idx = torch.arange(r, device=s_mask_logits.device)
        cls = classes.long().to(s_mask_logits.device)
        s, t = s_mask_logits[idx, cls], t_mask_logits[idx, cls]
    s, t = float32_pair(s, t)
    return (s - t).pow(2).mean()


def kd_quality_focal_loss(
    pred_logits: torch.Tensor, t_logits: torch.Tensor, avg_factor: float, beta: float = 1.0
) -> torch.Tensor:
    """CrossKD's mask KD: the quality focal loss with the teacher's sigmoid as soft target
    (jbwang1997/CrossKD, branch faster-rcnn, mmdet/models/losses/kd_loss.py
    ``kd_quality_focal_loss``, as ``mask_loss_with_kd`` of crosskd_two_stage.py calls it).

    Per element, with t = sigmoid(t_logits) and p = sigmoid(pred_logits):
    ``BCE_with_logits(pred, t) * |p - t| ** beta``, summed over every element and divided by
    ``avg_factor + eps`` (mmdet ``weight_reduce_loss``, reduction mean; eps = float32 eps).

    pred_logits, t_logits: same shape, e.g. (R_fg, K, M, M) mask logits (every class channel).
    avg_factor: the reference divides by the number of *sampled* RoIs (foreground and background).
    No element: a graph-connected zero. Scalar.
    """
    check_same_shape(pred_logits, t_logits, "kd_quality_focal_loss")
    if pred_logits.numel() == 0:
        return connected_zero(pred_logits)
    pred_logits, t_logits = float32_pair(pred_logits, t_logits)
    target = torch.sigmoid(t_logits)
    bce = F.binary_cross_entropy_with_logits(pred_logits, target, reduction="none")
    focal = (torch.sigmoid(pred_logits) - target).abs().pow(beta)
    return (bce * focal).sum() / (avg_factor + torch.finfo(torch.float32).eps)
