"""DeFeat-style decoupled feature imitation (Guo et al., CVPR 2021): fg / bg weighted MSE."""

import torch

from ._utils import as_teacher, check_same_shape, connected_zero


def defeat_feature_loss(
    s: torch.Tensor,
    t: torch.Tensor,
    fg_mask: torch.Tensor,
    fg_weight: float = 2.0,
    bg_weight: float = 0.5,
) -> torch.Tensor:
    """Decoupled MSE inside / outside ground-truth boxes.

    s, t: (N, C, H, W) (teacher detached). fg_mask: (N, H, W) bool or {0, 1} float, e.g.
    ``box_masks(...).fg_mask``. fg_weight / bg_weight: scalar weights (not the FGD maps).

    loss = fg_weight * sum_{fg (n,h,w), c} (s - t)^2 / (C * #fg)
         + bg_weight * sum_{bg (n,h,w), c} (s - t)^2 / (C * #bg)

    i.e. the mean over channels and over the batch's fg (bg) positions. A term with no position
    contributes a graph-connected 0. Scalar.
    """
    check_same_shape(s, t, "defeat_feature_loss")
    if fg_mask.shape != (s.shape[0],) + tuple(s.shape[2:]):
        raise ValueError(
            f"fg_mask shape {tuple(fg_mask.shape)} does not match features {tuple(s.shape)}"
        )
    c = s.shape[1]
    fg = fg_mask.to(dtype=s.dtype, device=s.device)
    bg = 1.0 - fg
    sq = (s - as_teacher(t, s)).pow(2).sum(dim=1)  # (N, H, W), summed over channels
    loss = connected_zero(s)
    num_fg, num_bg = fg.sum(), bg.sum()
    # Divide by max(count, 1): an empty term is then an exact (connected) zero without a branch.
    loss = loss + fg_weight * (sq * fg).sum() / (c * num_fg.clamp(min=1.0))
    loss = loss + bg_weight * (sq * bg).sum() / (c * num_bg.clamp(min=1.0))
    return loss
