"""Mask-logit KD (Mask R-CNN mask head). Ours: no paper or reference implementation of this
form was found (see ``distillers.roi.MaskKDDistiller``)."""

import torch

from ._utils import as_teacher, check_same_shape, connected_zero


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
    return (s - as_teacher(t, s)).pow(2).mean()
