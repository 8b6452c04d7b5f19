"""Foreground/background-aware feature KD from the ground-truth boxes: DeFeat, FGD, MGD."""
from collections import defaultdict
from typing import Dict

import torch
from detectron2.config import configurable
from torch import nn

from ..base import DistillContext, Distiller, register_distiller
from ..losses import FGDLoss, MGDLoss, build_adapter, defeat_feature_loss
from .levels import FeatureLevels, feature_levels


@register_distiller("defeat")
class DeFeatDistiller(Distiller):
    """DeFeat (Guo et al., CVPR 2021) feature term: MSE inside ground-truth boxes and outside
    them, each averaged over its own positions and weighted (FG_WEIGHT, BG_WEIGHT)."""

    @configurable
    def __init__(self, *, levels: FeatureLevels, fg_weight: float, bg_weight: float):
        super().__init__()
        self.levels = levels
        self.adapters = nn.ModuleDict(
            {n: build_adapter(levels.s_channels[n], levels.t_channels[n]) for n in levels.names}
        )
        self.fg_weight, self.bg_weight = fg_weight, bg_weight

    @classmethod
    def from_config(cls, cfg, student, teacher):
        node = cfg.DISTILL.DEFEAT
        return {"levels": feature_levels(cfg, student, teacher), "fg_weight": node.FG_WEIGHT, "bg_weight": node.BG_WEIGHT}

    def forward(self, ctx: DistillContext) -> Dict[str, torch.Tensor]:
        loss = 0.0
        for n in self.levels.names:
            masks = ctx.gt_box_masks(n, self.levels.strides[n])
            s = self.adapters[n](ctx.s_features[n])
            loss = loss + defeat_feature_loss(s, ctx.t_features[n], masks.fg_mask, self.fg_weight, self.bg_weight)
        return {"loss_kd_defeat": loss}


@register_distiller("fgd")
class FGDDistiller(Distiller):
    """FGD (Yang et al., CVPR 2022): one ``FGDLoss`` per level (own align conv and global
    context blocks, as in the official code). Terms summed over levels and logged separately:
    ``loss_kd_fgd_{fg,bg,mask,global}`` (already weighted by ALPHA/BETA/GAMMA/LAMBDA)."""

    @configurable
    def __init__(self, *, levels: FeatureLevels, temperature, alpha, beta, gamma, lambda_):
        super().__init__()
        self.levels = levels
        self.losses = nn.ModuleDict(
            {
                n: FGDLoss(levels.s_channels[n], levels.t_channels[n], temperature, alpha, beta, gamma, lambda_)
                for n in levels.names
            }
        )

    @classmethod
    def from_config(cls, cfg, student, teacher):
        node = cfg.DISTILL.FGD
        return {
            "levels": feature_levels(cfg, student, teacher),
            "temperature": node.TEMPERATURE,
            "alpha": node.ALPHA,
            "beta": node.BETA,
            "gamma": node.GAMMA,
            "lambda_": node.LAMBDA,
        }

    def forward(self, ctx: DistillContext) -> Dict[str, torch.Tensor]:
        terms = defaultdict(float)
        for n in self.levels.names:
            masks = ctx.gt_box_masks(n, self.levels.strides[n])
            level_terms = self.losses[n](ctx.s_features[n], ctx.t_features[n], masks.fg_weight, masks.bg_weight)
            for term, value in level_terms.items():
                terms[term] = terms[term] + value
        return {f"loss_kd_fgd_{term}": value for term, value in terms.items()}


@register_distiller("mgd")
class MGDDistiller(Distiller):
    """MGD (Yang et al., ECCV 2022): the student, randomly masked, must generate the teacher's
    feature through a small conv block; one ``MGDLoss`` per level."""

    @configurable
    def __init__(self, *, levels: FeatureLevels, mask_ratio: float, alpha: float):
        super().__init__()
        self.levels = levels
        self.losses = nn.ModuleDict(
            {n: MGDLoss(levels.s_channels[n], levels.t_channels[n], mask_ratio, alpha) for n in levels.names}
        )

    @classmethod
    def from_config(cls, cfg, student, teacher):
        node = cfg.DISTILL.MGD
        return {"levels": feature_levels(cfg, student, teacher), "mask_ratio": node.MASK_RATIO, "alpha": node.ALPHA}

    def forward(self, ctx: DistillContext) -> Dict[str, torch.Tensor]:
        loss = sum(self.losses[n](ctx.s_features[n], ctx.t_features[n]) for n in self.levels.names)
        return {"loss_kd_mgd": loss}
