"""ReviewKD (Chen et al., CVPR 2021) for FPN levels: ABF fusion modules and the HCL loss.

Follows the official detection code (dvlab-research/ReviewKD, ``Detection/``): one ABF per level,
levels processed from the coarsest to the finest, the coarsest ABF without fusion, nearest
upsampling of the coarser residual, and ``hcl`` with pool sizes (4, 2, 1).
"""

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ._utils import check_same_shape, float32_pair, get_norm, kaiming_uniform_a1_
from .valid import masked_mean, valid_extents


class ABF(nn.Module):
    """Attention-based fusion of one level.

    conv1: 1x1 conv ``in_channels -> mid_channels`` + norm; if ``fuse``: the coarser level's
    residual (N, mid, h', w') is upsampled (nearest) to this level, ``att_conv`` (1x1 conv
    2*mid -> 2, sigmoid) gives two maps, x = x * a0 + residual * a1; conv2: 3x3 conv
    ``mid -> out_channels`` + norm.

    forward(x (N, in, H, W), residual (N, mid, h', w') or None) ->
        (output (N, out, H, W), residual for the next finer level (N, mid, H, W)).
    norm: "BN" (official), "GN" (small CPU batches), "" (none; convs then get a bias), ...
    Init as official: kaiming_uniform_(a=1) on conv1 / conv2 weights.
    """

    def __init__(
        self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool, norm: str = "BN"
    ):
        super().__init__()
        bias = not norm
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=bias),
            get_norm(norm, mid_channels),
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=bias),
            get_norm(norm, out_channels),
        )
        if fuse:
            self.att_conv = nn.Sequential(
                nn.Conv2d(mid_channels * 2, 2, kernel_size=1), nn.Sigmoid()
            )
        else:
            self.att_conv = None
        kaiming_uniform_a1_(self.conv1[0])
        kaiming_uniform_a1_(self.conv2[0])

    @property
    def fuse(self) -> bool:
        return self.att_conv is not None

    def forward(
        self, x: torch.Tensor, residual: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(x)
        if self.att_conv is not None:
            if residual is None:
                raise ValueError("ABF with fuse=True needs the residual of the coarser level")
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            att = self.att_conv(torch.cat([x, residual], dim=1))  # (N, 2, H, W)
            x = x * att[:, 0:1] + residual * att[:, 1:2]
        return self.conv2(x), x


class ReviewKDFusion(nn.Module):
    """ReviewKD's student transform over FPN levels.

    in_channels_per_level / out_channels_per_level: student / teacher widths, ordered from the
    finest to the coarsest level (p2, ..., p6). mid_channels: ABF width (official detection: 256).
    ``abfs[i]`` serves level i; the coarsest (last) level has no fusion.

    forward(list of L student features (N, C_i, H_i, W_i), finest first) -> list of L tensors
    (N, out_i, H_i, W_i), finest first, to be compared with the teacher levels by
    :func:`hcl_loss`.
    """

    def __init__(
        self,
        in_channels_per_level: Sequence[int],
        mid_channels: int = 256,
        out_channels_per_level: Optional[Sequence[int]] = None,
        norm: str = "BN",
    ):
        super().__init__()
        if out_channels_per_level is None:
            out_channels_per_level = list(in_channels_per_level)
        if len(out_channels_per_level) != len(in_channels_per_level):
            raise ValueError("in_channels_per_level and out_channels_per_level differ in length")
        num = len(in_channels_per_level)
        self.abfs = nn.ModuleList(
            ABF(c_in, mid_channels, c_out, fuse=i < num - 1, norm=norm)
            for i, (c_in, c_out) in enumerate(zip(in_channels_per_level, out_channels_per_level))
        )

    def forward(self, features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        if len(features) != len(self.abfs):
            raise ValueError(f"expected {len(self.abfs)} levels, got {len(features)}")
        outputs: List[torch.Tensor] = [None] * len(features)  # type: ignore[list-item]
        residual = None
        for i in range(len(features) - 1, -1, -1):  # coarsest -> finest
            outputs[i], residual = self.abfs[i](features[i], residual)
        return outputs


def hcl_loss(
    student_levels: Sequence[torch.Tensor],
    teacher_levels: Sequence[torch.Tensor],
    pool_sizes: Sequence[int] = (4, 2, 1),
    valid: Optional[Sequence[Optional[torch.Tensor]]] = None,
    extents: Optional[Sequence[Optional[Sequence[Tuple[int, int]]]]] = None,
) -> torch.Tensor:
    """Hierarchical context loss (official ``hcl``), summed over levels.

    Per level (s, t of equal shape (N, C, H, W); teacher detached):
    ``mse(s, t) + sum_k w_k * mse(pool_k(s), pool_k(t))``, divided by ``1 + sum_k w_k``, where
    pool_k = adaptive_avg_pool2d to (k, k) for k in ``pool_sizes`` with k < H (others skipped)
    and w_k = 1/2, 1/4, ... over the *used* sizes in order. Scalar.
    valid: per level an (N, H, W) bool mask of image content or None; the mse then runs over the
    valid cells and pool_k pools each image's valid top-left rectangle.
    extents: per level the (rows, cols) of those rectangles, from the host-side image sizes
    (``image_extents``; ``DistillContext.valid_extents``); without them they are read back from
    ``valid`` (a device sync). Computed in float32.
    """
    if len(student_levels) != len(teacher_levels):
        raise ValueError("hcl_loss: different numbers of student and teacher levels")
    total = None
    levels = len(student_levels)
    for fs, ft, v, ext in zip(student_levels, teacher_levels, valid or [None] * levels, extents or [None] * levels):
        check_same_shape(fs, ft, "hcl_loss")
        fs, ft = float32_pair(fs, ft)
        h = fs.shape[2]
        rects = None if v is None else (valid_extents(v) if ext is None else ext)
        loss = F.mse_loss(fs, ft, reduction="mean") if v is None else masked_mean((fs - ft).pow(2), v)
        cnt, tot = 1.0, 1.0
        for k in pool_sizes:
            if k >= h:
                continue
            cnt /= 2.0
            loss = (
                loss
                + F.mse_loss(
                    _pool(fs, k, rects),
                    _pool(ft, k, rects),
                    reduction="mean",
                )
                * cnt
            )
            tot += cnt
        loss = loss / tot
        total = loss if total is None else total + loss
    if total is None:
        raise ValueError("hcl_loss: no levels")
    return total


def _pool(x: torch.Tensor, k: int, extents: Optional[List[Tuple[int, int]]]) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, k, k) adaptive average; with ``extents`` ((rows, cols) per image)
    each image's top-left rows x cols rectangle is pooled."""
    if extents is None:
        return F.adaptive_avg_pool2d(x, (k, k))
    return torch.cat([F.adaptive_avg_pool2d(x[i : i + 1, :, :r, :c], (k, k)) for i, (r, c) in enumerate(extents)])
