"""FGD: Focal and Global Knowledge Distillation (Yang et al., CVPR 2022).

Follows the official ``FeatureLoss`` of yzd-v/FGD (``mmdet/distillation/losses/fgd.py``):
attention from |features| with temperature, focal term weighted by the *teacher's* attentions
(square roots, as in the official code) and by the fg / bg maps, attention-mask L1 loss, and the
global relation loss through two GcBlock-style context modules (one fed by the student, one by
the teacher; both trainable). Every term is a *sum* divided by the batch size N, as official.
The fg / bg maps come from :func:`box_masks` (the official code builds them inside ``forward``
from rescaled boxes; see ``box_masks`` for the cell convention we use instead).
"""

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ._utils import check_same_shape, float32_pair
from .valid import masked_sum


def fgd_attention(
    x: torch.Tensor, temperature: float, valid: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """FGD's spatial and channel attention of a feature map.

    x: (N, C, H, W). Returns (spatial (N, H, W), channel (N, C)):
    spatial = H*W * softmax_{hw}(mean_c |x| / T), channel = C * softmax_c(mean_{hw} |x| / T).
    valid: (N, H, W) bool; hw then runs over each image's valid cells only (H*W becomes their
    count, spatial is 0 on the other cells).
    """
    n, c, h, w = x.shape
    a = x.abs()
    logits = (a.mean(dim=1) / temperature).reshape(n, -1)
    if valid is None:
        spatial = (h * w) * F.softmax(logits, dim=1)
        channel_mean = a.mean(dim=(2, 3))
    else:
        keep = valid.reshape(n, -1)
        count = keep.sum(dim=1, keepdim=True)  # (N, 1)
        spatial = count * F.softmax(logits.masked_fill(~keep, float("-inf")), dim=1)
        channel_mean = (a * valid[:, None]).sum(dim=(2, 3)) / count
    channel = c * F.softmax(channel_mean / temperature, dim=1)
    return spatial.reshape(n, h, w), channel


class _GlobalContext(nn.Module):
    """GcBlock-style context: softmax-attention pooling (1x1 conv C->1) + channel transform
    (1x1 conv C->C/2, LayerNorm([C/2,1,1]), ReLU, 1x1 conv C/2->C), added to every position."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=1),
            nn.LayerNorm([channels // 2, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 2, channels, kernel_size=1),
        )
        # Official reset_parameters: mmcv kaiming_init(mode="fan_in") on conv_mask (normal,
        # relu gain, bias 0) and zero init (weight and bias) of the last channel_add conv.
        nn.init.kaiming_normal_(self.conv_mask.weight, a=0, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.channel_add[-1].weight)
        nn.init.zeros_(self.channel_add[-1].bias)

    def forward(self, x: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (N, C, H, W); valid: (N, H, W) bool cells the attention pooling may use (None: all)."""
        n, c, h, w = x.shape
        logits = self.conv_mask(x).reshape(n, 1, h * w)
        if valid is not None:
            logits = logits.masked_fill(~valid.reshape(n, 1, h * w), float("-inf"))
        att = F.softmax(logits, dim=2)  # (N, 1, HW)
        context = torch.bmm(x.reshape(n, c, h * w), att.transpose(1, 2))  # (N, C, 1)
        return x + self.channel_add(context.reshape(n, c, 1, 1))


class FGDLoss(nn.Module):
    """FGD loss for one feature level.

    Args:
        student_channels / teacher_channels: widths; a 1x1 ``align`` conv (student -> teacher)
            exists only when they differ (else ``self.align is None``).
        temperature: attention temperature T (paper / official: 0.5).
        alpha, beta: weights of the foreground / background focal terms.
        gamma: weight of the attention-mask loss. lambda_: weight of the global relation loss.
        Defaults: the official Faster R-CNN (two-stage) settings, temp 0.5, alpha 5e-5,
        beta 2.5e-5, gamma 5e-5, lambda 5e-7 (the official class defaults 1e-3, 5e-4, 1e-3,
        5e-6 are its RetinaNet setting).

    forward(s (N, C_s, H, W), t (N, C_t, H, W), fg_weight_map (N, H, W), bg_weight_map (N, H, W))
    returns a dict of *weighted* scalar terms ``{"fg", "bg", "mask", "global"}``; their sum is
    the official ``FeatureLoss`` value, computed in float32 (the maps are float32 and the terms
    float32 whatever dtype autocast gives the convs).
    Teacher features are detached. ``valid`` (N, H, W) bool
    restricts every term to the image content (attentions, context pooling and sums over the
    valid cells; the maps must be 0 elsewhere, see ``box_masks(valid=...)``); None: all cells.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        temperature: float = 0.5,
        alpha: float = 5e-5,
        beta: float = 2.5e-5,
        gamma: float = 5e-5,
        lambda_: float = 5e-7,
    ):
        super().__init__()
        self.temperature = float(temperature)
        self.alpha, self.beta, self.gamma, self.lambda_ = alpha, beta, gamma, lambda_
        if student_channels != teacher_channels:
            self.align = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
        else:
            self.align = None
        # official conv_mask_s / channel_add_conv_s and conv_mask_t / channel_add_conv_t
        self.context_s = _GlobalContext(teacher_channels)
        self.context_t = _GlobalContext(teacher_channels)

    def forward(
        self,
        s: torch.Tensor,
        t: torch.Tensor,
        fg_weight_map: torch.Tensor,
        bg_weight_map: torch.Tensor,
        valid: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        s, t = float32_pair(s, t)
        if self.align is not None:
            s = self.align(s).float()  # float16 under autocast: back to float32 for the terms
        check_same_shape(s, t, "FGDLoss")
        n = s.shape[0]
        fg_map = fg_weight_map.to(device=s.device, dtype=torch.float32).unsqueeze(1)  # (N, 1, H, W)
        bg_map = bg_weight_map.to(device=s.device, dtype=torch.float32).unsqueeze(1)
        spatial_t, channel_t = fgd_attention(t, self.temperature, valid)
        spatial_s, channel_s = fgd_attention(s, self.temperature, valid)

        # Focal term: both features scaled by sqrt of the teacher's attentions and of the maps.
        att = (spatial_t.unsqueeze(1) * channel_t[:, :, None, None]).sqrt()  # (N, C, H, W)
        diff = (s - t) * att
        fg_loss = (diff * fg_map.sqrt()).pow(2).sum() / n
        bg_loss = (diff * bg_map.sqrt()).pow(2).sum() / n

        mask_loss = (channel_s - channel_t).abs().sum() / n
        mask_loss = mask_loss + (spatial_s - spatial_t).abs().sum() / n

        global_loss = masked_sum((self.context_s(s, valid).float() - self.context_t(t, valid).float()).pow(2), valid) / n

        return {
            "fg": self.alpha * fg_loss,
            "bg": self.beta * bg_loss,
            "mask": self.gamma * mask_loss,
            "global": self.lambda_ * global_loss,
        }
