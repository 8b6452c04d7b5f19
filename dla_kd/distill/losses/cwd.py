"""Channel-wise distillation (Shu et al., ICCV 2021), as mmrazor's ``ChannelWiseDivergence``."""

from typing import Optional

import torch
import torch.nn.functional as F

from ._utils import check_same_shape, float32_pair


def cwd_loss(s: torch.Tensor, t: torch.Tensor, tau: float = 1.0, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Channel-wise KL divergence between spatial distributions.

    s, t: (N, C, H, W), equal shapes (teacher detached). For every (n, c) a softmax over the
    H*W positions of x / tau gives p_T and p_S; the loss is
    ``tau^2 * sum_{n,c} KL(p_T || p_S) / (N * C)`` (KL summed over positions), in float32. Scalar.
    valid: (N, H, W) bool; the softmaxes and the KL then run over each image's valid cells only.
    """
    check_same_shape(s, t, "cwd_loss")
    n, c, h, w = s.shape
    s, t = float32_pair(s, t)
    s_logits = s.reshape(n * c, h * w) / tau
    t_logits = t.reshape(n * c, h * w) / tau
    if valid is not None:
        keep = valid.reshape(n, 1, h * w).expand(n, c, h * w).reshape(n * c, h * w)
        s_logits = s_logits.masked_fill(~keep, float("-inf"))
        t_logits = t_logits.masked_fill(~keep, float("-inf"))
    log_p_s = F.log_softmax(s_logits, dim=1)
    log_p_t = F.log_softmax(t_logits, dim=1)
    kl = log_p_t.exp() * (log_p_t - log_p_s)
    if valid is not None:
        kl = torch.where(keep, kl, torch.zeros_like(kl))  # p_T = 0 outside: drop (-inf) - (-inf)
    return kl.sum() * (tau**2) / (n * c)
