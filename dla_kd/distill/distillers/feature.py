"""Feature-based KD on FPN levels with per-level adapters: FitNets, PKD, CWD, SimKD's MSE."""
from typing import Dict, Optional

import torch
from detectron2.config import configurable
from torch import nn

from ..base import DistillContext, register_distiller
from ..losses import build_adapter, cwd_loss, fitnet_loss, pkd_loss
from .levels import FeatureDistiller, FeatureLevels


class AdaptedFeatureDistiller(FeatureDistiller):
    """Student level -> adapter (1x1 conv; identity when widths match) -> ``level_loss`` against
    the teacher level; summed over the loss's levels (``DISTILL.<NAME>.IN_FEATURES``). Returns
    ``loss_kd_<name>``."""

    @configurable
    def __init__(self, *, levels: FeatureLevels, **loss_kwargs):
        super().__init__(levels)
        self.adapters = nn.ModuleDict(
            {n: build_adapter(levels.s_channels[n], levels.t_channels[n]) for n in levels.names}
        )
        self.loss_kwargs = loss_kwargs

    def level_loss(self, s: torch.Tensor, t: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
        """s, t: (N, C_t, H, W); valid: (N, H, W) bool cells of image content or None -> scalar."""
        raise NotImplementedError

    def forward(self, ctx: DistillContext) -> Dict[str, torch.Tensor]:
        loss = sum(
            self.level_loss(self.adapters[n](ctx.s_features[n]), ctx.t_features[n], self.valid_mask(ctx, n))
            for n in self.levels.names
        )
        return {f"loss_kd_{self.loss_name}": loss}


@register_distiller("fitnet")
class FitNetDistiller(AdaptedFeatureDistiller):
    """FitNets hint (Romero et al., ICLR 2015): MSE to the teacher's FPN features."""

    def level_loss(self, s, t, valid):
        return fitnet_loss(s, t, valid)


@register_distiller("pkd")
class PKDDistiller(AdaptedFeatureDistiller):
    """PKD (Cao et al., NeurIPS 2022): MSE of per-channel standardised features (Pearson), as
    open-mmlab/mmrazor ``mmrazor/models/losses/pkd_loss.py``; levels and weight from
    ``configs/distill/mmdet/pkd/pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py`` (neck
    outputs 0..3 = p2..p5, weight 6)."""

    def level_loss(self, s, t, valid):
        return pkd_loss(s, t, valid)


@register_distiller("cwd")
class CWDDistiller(AdaptedFeatureDistiller):
    """CWD (Shu et al., ICCV 2021): KL between per-channel spatial softmaxes at temperature TAU, as
    open-mmlab/mmrazor ``mmrazor/models/losses/cwd.py`` with
    ``configs/distill/mmdet/cwd/cwd_fpn_frcnn_r101_frcnn_r50_1x_coco.py`` (p2..p6, tau 1, weight 10)."""

    @classmethod
    def from_config(cls, cfg, student, teacher):
        return {**super().from_config(cfg, student, teacher), "tau": cfg.DISTILL.CWD.TAU}

    def level_loss(self, s, t, valid):
        return cwd_loss(s, t, tau=self.loss_kwargs["tau"], valid=valid)


@register_distiller("simkd")
class SimKDDistiller(AdaptedFeatureDistiller):
    """SimKD (Chen et al., CVPR 2022) feature term: MSE between the student's *projected* FPN
    features (the projector is part of the student's backbone, see
    ``dla_kd.modeling.projected_backbone``) and the teacher's. The student reuses the teacher's
    heads on these features; the builder sets that up when ``simkd`` is in ``DISTILL.LOSSES``."""

    @classmethod
    def from_config(cls, cfg, student, teacher):
        args = super().from_config(cfg, student, teacher)
        levels = args["levels"]
        if levels.s_channels != levels.t_channels:
            raise ValueError(f"SimKD: projected student widths {levels.s_channels} != teacher's {levels.t_channels}")
        return args

    def level_loss(self, s, t, valid):
        return fitnet_loss(s, t, valid)
