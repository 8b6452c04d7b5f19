"""ReviewKD (Chen et al., CVPR 2021) across FPN levels."""
from typing import Dict

import torch
from detectron2.config import configurable

from ..base import DistillContext, register_distiller
from ..losses import ReviewKDFusion, hcl_loss
from .levels import FeatureDistiller, FeatureLevels


@register_distiller("reviewkd")
class ReviewKDDistiller(FeatureDistiller):
    """Student levels fused coarse -> fine by attention-based fusion (ABF) modules, each fused
    level compared with the teacher level of the same stride by the hierarchical context loss."""

    @configurable
    def __init__(self, *, levels: FeatureLevels, mid_channels: int, pool_sizes, norm: str):
        super().__init__(levels)
        self.fusion = ReviewKDFusion(
            [levels.s_channels[n] for n in levels.names],
            mid_channels,
            [levels.t_channels[n] for n in levels.names],
            norm=norm,
        )
        self.pool_sizes = tuple(pool_sizes)

    @classmethod
    def from_config(cls, cfg, student, teacher):
        node = cfg.DISTILL.REVIEWKD
        return {
            **super().from_config(cfg, student, teacher),
            "mid_channels": node.MID_CHANNELS,
            "pool_sizes": node.HCL_LEVELS,
            "norm": node.NORM,
        }

    def forward(self, ctx: DistillContext) -> Dict[str, torch.Tensor]:
        fused = self.fusion([ctx.s_features[n] for n in self.levels.names])  # finest first
        teacher = [ctx.t_features[n] for n in self.levels.names]
        valid = [self.valid_mask(ctx, n) for n in self.levels.names]
        extents = [ctx.valid_extents(n, self.levels.strides[n]) for n in self.levels.names]  # host-side
        return {"loss_kd_reviewkd": hcl_loss(fused, teacher, self.pool_sizes, valid, extents)}
