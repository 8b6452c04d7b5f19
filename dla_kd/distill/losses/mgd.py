"""MGD: Masked Generative Distillation (Yang et al., ECCV 2022), official ``FeatureLoss``."""

from typing import Optional

import torch
from torch import nn

from ._utils import check_same_shape, float32_pair
from .valid import masked_sum


def mgd_random_mask(
    n: int,
    h: int,
    w: int,
    mask_ratio: float,
    device=None,
    dtype: torch.dtype = torch.float32,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """(N, 1, H, W) keep-mask: 0 where ``rand > 1 - mask_ratio`` (masked), 1 elsewhere.

    ``rand`` is uniform [0, 1) drawn with ``generator`` (on the generator's device, then moved to
    ``device``: give a generator on ``device`` to avoid a copy, on a GPU a host sync) or from
    the global RNG when ``generator`` is None. About ``mask_ratio`` of the
    positions are masked (official: ``torch.where(mat > 1 - lambda_mgd, 0, 1)``).
    """
    if generator is not None:
        rand = torch.rand((n, 1, h, w), generator=generator, device=generator.device)
    else:
        rand = torch.rand((n, 1, h, w), device=device)
    return torch.where(rand > 1 - mask_ratio, 0.0, 1.0).to(device=device, dtype=dtype)


class MGDLoss(nn.Module):
    """MGD loss for one feature level.

    Args:
        student_channels / teacher_channels: a 1x1 ``align`` conv exists when they differ.
        mask_ratio: fraction of spatial positions masked (official two-stage: 0.45; one-stage 0.65).
        alpha: loss weight (official two-stage: 5e-7; one-stage 2e-5).

    ``forward(s (N, C_s, H, W), t (N, C_t, H, W), generator=None)``: align, multiply by a random
    (N, 1, H, W) mask (:func:`mgd_random_mask`), generation block conv3x3-ReLU-conv3x3, then
    ``alpha * sum((gen - t)^2) / N``, the difference and sum in float32 (under autocast the convs
    run in float16; a float16 sum of squares overflows). Scalar. Teacher detached. ``mask`` can be passed instead of
    drawing one (tests, reproducibility). ``valid`` (N, H, W) bool: every input of the generation
    block is zeroed outside it (the block sees each image alone, not the batch padding) and the
    sum runs over the valid cells only.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        mask_ratio: float = 0.45,
        alpha: float = 5e-7,
    ):
        super().__init__()
        self.mask_ratio = float(mask_ratio)
        self.alpha = float(alpha)
        if student_channels != teacher_channels:
            self.align = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
        else:
            self.align = None
        self.generation = nn.Sequential(
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=3, padding=1),
        )

    def forward(
        self,
        s: torch.Tensor,
        t: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        mask: Optional[torch.Tensor] = None,
        valid: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        s, t = float32_pair(s, t)
        if self.align is not None:
            s = self.align(s)
        check_same_shape(s, t, "MGDLoss")
        n, _, h, w = t.shape
        if mask is None:
            mask = mgd_random_mask(n, h, w, self.mask_ratio, s.device, s.dtype, generator)
        generated = s * mask
        for layer in self.generation:
            if valid is not None:  # zero outside the image, as a conv's padding of the image alone
                generated = generated * valid[:, None]
            generated = layer(generated)
        return self.alpha * masked_sum((generated.float() - t).pow(2), valid) / n
