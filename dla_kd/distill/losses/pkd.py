"""PKD (Cao et al., NeurIPS 2022): MSE between per-channel standardised features (mmrazor)."""

import torch
import torch.nn.functional as F

from ._utils import as_teacher, check_same_shape


def standardize_per_channel(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(x - mean_c) / (std_c + eps) with mean / std over (N, H, W) for each channel c.

    As mmrazor's ``PKDLoss.norm``: ``std`` is the unbiased (N*H*W - 1) estimate, ``eps`` is
    added to the std. (N, C, H, W) -> (N, C, H, W). With a single value per channel the std is
    taken as 0 (instead of NaN), giving all-zero output.
    """
    n, c, h, w = x.shape
    flat = x.transpose(0, 1).reshape(c, -1)
    mean = flat.mean(dim=1, keepdim=True)
    if flat.shape[1] > 1:
        std = flat.std(dim=1, keepdim=True)
    else:
        std = torch.zeros_like(mean)
    flat = (flat - mean) / (std + eps)
    return flat.reshape(c, n, h, w).transpose(0, 1)


def pkd_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """PKD loss: ``mse_mean(norm(s), norm(t)) / 2`` with :func:`standardize_per_channel`.

    s, t: (N, C, H, W) of equal shape (the teacher is detached). Scalar output; equals
    ``1 - r`` averaged over channels with r the Pearson correlation (up to the unbiased-std
    factor). Channel widths need not be adapted for the normalisation, but the MSE needs equal C:
    pass the student through an adapter first when widths differ.
    """
    check_same_shape(s, t, "pkd_loss")
    return F.mse_loss(standardize_per_channel(s), standardize_per_channel(as_teacher(t, s))) / 2.0
