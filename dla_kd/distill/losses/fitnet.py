"""FitNets hint loss (Romero et al., ICLR 2015) on (adapted) feature maps."""

import torch
import torch.nn.functional as F

from ._utils import as_teacher, check_same_shape


def fitnet_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean squared error between student and teacher features.

    s, t: (N, C, H, W) (any equal shapes work); the student already passed through its adapter
    (:func:`build_adapter`). Returns a scalar: mean over all elements of (s - t)^2. The teacher is
    detached. Also the SimKD feature loss (after :class:`SimKDProjector`).
    """
    check_same_shape(s, t, "fitnet_loss")
    return F.mse_loss(s, as_teacher(t, s), reduction="mean")
