"""Channel-wise distillation (Shu et al., ICCV 2021), as mmrazor's ``ChannelWiseDivergence``."""

import torch
import torch.nn.functional as F

from ._utils import as_teacher, check_same_shape


def cwd_loss(s: torch.Tensor, t: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Channel-wise KL divergence between spatial distributions.

    s, t: (N, C, H, W), equal shapes (teacher detached). For every (n, c) a softmax over the
    H*W positions of x / tau gives p_T and p_S; the loss is
    ``tau^2 * sum_{n,c} KL(p_T || p_S) / (N * C)`` (KL summed over positions). Scalar.
    """
    check_same_shape(s, t, "cwd_loss")
    n, c, h, w = s.shape
    log_p_s = F.log_softmax(s.reshape(n * c, h * w) / tau, dim=1)
    log_p_t = F.log_softmax(as_teacher(t, s).reshape(n * c, h * w) / tau, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum()
    return kl * (tau**2) / (n * c)
