"""Pure-tensor distillation losses and their small trainable modules.

Feature level (student s / teacher t: (N, C, H, W), equal shapes after adaptation):
    fitnet_loss, ChannelAdapter / build_adapter, pkd_loss, cwd_loss, defeat_feature_loss,
    box_masks (fg mask + FGD fg / bg weight maps from GT boxes), FGDLoss, MGDLoss,
    ABF / ReviewKDFusion / hcl_loss, SimKDProjector (its loss is fitnet_loss).
RoI level (logits (R, K+1), background last):
    kd_loss (also CrossKD), logit_mse_loss, roi_weights, box_delta_l2_loss, box_l1_loss,
    box_giou_loss, mask_logit_kd_loss.

Teacher inputs are always detached inside the losses. Losses that can see empty input (no RoI,
no foreground) return a zero connected to the student's graph (``connected_zero``).
"""

from ._utils import connected_zero, get_norm
from .adapter import ChannelAdapter, build_adapter
from .box_kd import (
    box_delta_l2_loss,
    box_giou_loss,
    box_l1_loss,
    generalized_iou,
    select_class_deltas,
)
from .gt_masks import BoxMasks, box_cell_ranges, box_masks
from .cwd import cwd_loss
from .defeat import defeat_feature_loss
from .fgd import FGDLoss, fgd_attention
from .fitnet import fitnet_loss
from .logits import kd_loss, logit_mse_loss, roi_weights
from .mask_kd import mask_logit_kd_loss
from .mgd import MGDLoss, mgd_random_mask
from .pkd import pkd_loss, standardize_per_channel
from .reviewkd import ABF, ReviewKDFusion, hcl_loss
from .simkd import SimKDProjector

__all__ = [
    "ABF",
    "BoxMasks",
    "ChannelAdapter",
    "FGDLoss",
    "MGDLoss",
    "ReviewKDFusion",
    "SimKDProjector",
    "box_cell_ranges",
    "box_delta_l2_loss",
    "box_giou_loss",
    "box_l1_loss",
    "box_masks",
    "build_adapter",
    "connected_zero",
    "cwd_loss",
    "defeat_feature_loss",
    "fgd_attention",
    "fitnet_loss",
    "generalized_iou",
    "get_norm",
    "hcl_loss",
    "kd_loss",
    "logit_mse_loss",
    "mask_logit_kd_loss",
    "mgd_random_mask",
    "pkd_loss",
    "roi_weights",
    "select_class_deltas",
    "standardize_per_channel",
]
