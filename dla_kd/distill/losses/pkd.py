"""PKD (Cao et al., NeurIPS 2022): MSE between per-channel standardised features (mmrazor)."""

from typing import Optional

import torch
import torch.nn.functional as F

from ._utils import check_same_shape, float32_pair
from .valid import masked_mean


def standardize_per_channel(x: torch.Tensor, eps: float = 1e-6, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(x - mean_c) / (std_c + eps) with mean / std over (N, H, W) for each channel c.

    As mmrazor's ``PKDLoss.norm``: ``std`` is the unbiased (N*H*W - 1) estimate, ``eps`` is
    added to the std. (N, C, H, W) -> (N, C, H, W). With a single value per channel the std is
    taken as 0 (instead of NaN), giving all-zero output. valid: (N, H, W) bool; the statistics
    are then taken over the valid cells only (count - 1 for the unbiased std). Computed in float32
    (returned float32) whatever the input dtype.
    """
    x = x.float()
    if valid is not None:
        m = valid[:, None].to(x.dtype)  # (N, 1, H, W)
        count = valid.sum()
        mean = (x * m).sum(dim=(0, 2, 3), keepdim=True) / count
        var = ((x - mean).pow(2) * m).sum(dim=(0, 2, 3), keepdim=True) / (count - 1).clamp(min=1)
        # std = 0 for a single cell, without a tensor condition (no host sync) and without
        # sqrt's infinite gradient at 0 on that branch.
        several = count > 1
        std = torch.where(several, var, torch.ones_like(var)).sqrt() * several
        return (x - mean) / (std + eps)
    n, c, h, w = x.shape
    flat = x.transpose(0, 1).reshape(c, -1)
    mean = flat.mean(dim=1, keepdim=True)
    if flat.shape[1] > 1:
        std = flat.std(dim=1, keepdim=True)
    else:
        std = torch.zeros_like(mean)
    flat = (flat - mean) / (std + eps)
    return flat.reshape(c, n, h, w).transpose(0, 1)


def pkd_loss(s: torch.Tensor, t: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """PKD loss: ``mse_mean(norm(s), norm(t)) / 2`` with :func:`standardize_per_channel`.

    s, t: (N, C, H, W) of equal shape (the teacher is detached). Scalar output; equals
    ``1 - r`` averaged over channels with r the Pearson correlation (up to the unbiased-std
    factor). Channel widths need not be adapted for the normalisation, but the MSE needs equal C:
    pass the student through an adapter first when widths differ. valid: (N, H, W) bool cells
    (statistics and mean over them only) or None for all.
    """
    check_same_shape(s, t, "pkd_loss")
    s, t = float32_pair(s, t)
    if valid is not None:
        diff = standardize_per_channel(s, valid=valid) - standardize_per_channel(t, valid=valid)
        return masked_mean(diff.pow(2), valid) / 2.0
    return F.mse_loss(standardize_per_channel(s), standardize_per_channel(t)) / 2.0
