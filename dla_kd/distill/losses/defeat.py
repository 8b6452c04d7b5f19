"""DeFeat's decoupled neck imitation (Guo et al., CVPR 2021): fg / bg weighted MSE on one level.

Reference: ggjy/DeFeat.pytorch, ``mmdet/apis/train.py`` (``batch_processor_kd``, the
``neck-decouple`` + ``pixel-wise`` branch), weights from
``configs/kd_faster_rcnn/voc_stu_faster_rcnn_r50_decouple_neck.py`` (``hint_neck_w=3``,
``hint_neck_back_w=12``). The reference averages this per-level value over the FPN levels
(``DeFeatDistiller``).
"""

from typing import Optional

import torch

from ._utils import check_same_shape, connected_zero, float32_pair


def defeat_feature_loss(
    s: torch.Tensor,
    t: torch.Tensor,
    fg_mask: torch.Tensor,
    fg_weight: float = 3.0,
    bg_weight: float = 12.0,
    valid: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Decoupled MSE inside / outside ground-truth boxes, on one level.

    s, t: (N, C, H, W) (teacher detached; ``s`` already through the adapter). fg_mask: (N, H, W)
    bool or {0, 1} float, DeFeat's mask of this level (``defeat_fg_masks``). fg_weight /
    bg_weight: scalars (reference: 3 and 12).

    loss = fg_weight * sum_{fg (n,h,w), c} (s - t)^2 / max(1, 2 * C * #fg)
         + bg_weight * sum_{bg (n,h,w), c} (s - t)^2 / max(1, 2 * C * #bg)

    with #fg / #bg counted over the whole batch, as the reference's ``norms`` (its mask is
    repeated over the C channels, hence the C). An empty term is a graph-connected 0. Scalar.
    valid: (N, H, W) bool cells of image content (:func:`valid_cells`) or None for all; fg and
    bg (and their counts) are then taken inside the valid cells only.
    """
    check_same_shape(s, t, "defeat_feature_loss")
    if fg_mask.shape != (s.shape[0],) + tuple(s.shape[2:]):
        raise ValueError(
            f"fg_mask shape {tuple(fg_mask.shape)} does not match features {tuple(s.shape)}"
        )
    c = s.shape[1]
    s, t = float32_pair(s, t)  # float32 masks and counts: a float16 count stops being exact at 2,048
    fg = fg_mask.to(dtype=torch.float32, device=s.device)
    bg = 1.0 - fg
    if valid is not None:
        fg, bg = fg * valid, bg * valid
    sq = (s - t).pow(2).sum(dim=1)  # (N, H, W), summed over channels
    loss = connected_zero(s)
    loss = loss + fg_weight * (sq * fg).sum() / (2 * c * fg.sum()).clamp(min=1.0)
    loss = loss + bg_weight * (sq * bg).sum() / (2 * c * bg.sum()).clamp(min=1.0)
    return loss
