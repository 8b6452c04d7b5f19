"""FitNets hint loss (Romero et al., ICLR 2015) on (adapted) feature maps."""

from typing import Optional

import torch
import torch.nn.functional as F

from ._utils import as_teacher, check_same_shape
from .valid import masked_mean


def fitnet_loss(s: torch.Tensor, t: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error between student and teacher features.

    s, t: (N, C, H, W) (any equal shapes work without ``valid``); the student already passed
    through its adapter (:func:`build_adapter`). valid: (N, H, W) bool cells to compare (image
    content, :func:`valid_cells`) or None for all. Returns a scalar: mean over the (valid)
    elements of (s - t)^2. The teacher is detached. Also the SimKD feature loss (after
    :class:`SimKDProjector`).
    """
    check_same_shape(s, t, "fitnet_loss")
    if valid is None:
        return F.mse_loss(s, as_teacher(t, s), reduction="mean")
    return masked_mean((s - as_teacher(t, s)).pow(2), valid)
