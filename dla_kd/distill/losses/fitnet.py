"""FitNets hint loss (Romero et al., ICLR 2015) on (adapted) feature maps."""

from typing import Optional

import torch
import torch.nn.functional as F

from ._utils import check_same_shape, float32_pair
from .valid import masked_mean


def fitnet_loss(s: torch.Tensor, t: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error between student and teacher features.

    s, t: (N, C, H, W) (any equal shapes work without ``valid``); the student already passed
    through its adapter (:func:`build_adapter`). valid: (N, H, W) bool cells to compare (image
    content, :func:`valid_cells`) or None for all. Returns a scalar: mean over the (valid)
    elements of (s - t)^2, computed in float32. The teacher is detached. Also the SimKD feature loss (after
    :class:`SimKDProjector`).
    """
    check_same_shape(s, t, "fitnet_loss")
    s, t = float32_pair(s, t)
    if valid is None:
        return F.mse_loss(s, t, reduction="mean")
    return masked_mean((s - t).pow(2), valid)
