"""Pure-tensor distillation losses and their small trainable modules.

Feature level (student s / teacher t: (N, C, H, W), equal shapes after adaptation):
    fitnet_loss, ChannelAdapter / build_adapter / defeat_adapter (ADAPTERS by name), pkd_loss,
    cwd_loss, defeat_feature_loss, box_masks (fg mask + FGD fg / bg weight maps from GT boxes),
    defeat_box_levels / defeat_fg_masks (DeFeat's per-level masks), FGDLoss, MGDLoss,
    ABF / ReviewKDFusion / hcl_loss, SimKDProjector (its loss is fitnet_loss); each takes an
    optional ``valid`` (N, H, W) mask of image content (valid_cells: batch padding is ignored).
RoI level (logits (R, K+1), background last):
    kd_loss (also CrossKD's class term), logit_mse_loss, decoupled_mean (plain / DeFeat per-group
    RoI reduction), box_delta_l2_loss, box_l1_loss, box_giou_loss, crosskd_box_loss,
    mask_logit_kd_loss, kd_quality_focal_loss (CrossKD's mask term).

Teacher inputs are always detached inside the losses. Losses that can see empty input (no RoI,
no foreground) return a zero connected to the student's graph (``connected_zero``).
"""

from ._utils import connected_zero, get_norm
from .adapter import ADAPTERS, ChannelAdapter, build_adapter, defeat_adapter
from .box_kd import (
    box_delta_l2_loss,
    box_giou_loss,
    box_l1_loss,
    crosskd_box_loss,
    generalized_iou,
    select_class_deltas,
)
from .gt_masks import BoxMasks, box_cell_ranges, box_masks, defeat_box_levels, defeat_fg_masks
from .cwd import cwd_loss
from .defeat import defeat_feature_loss
from .fgd import FGDLoss, fgd_attention
from .fitnet import fitnet_loss
from .logits import decoupled_mean, kd_loss, logit_mse_loss
from .mask_kd import kd_quality_focal_loss, mask_logit_kd_loss
from .mgd import MGDLoss, mgd_random_mask
from .pkd import pkd_loss, standardize_per_channel
from .reviewkd import ABF, ReviewKDFusion, hcl_loss
from .simkd import SimKDProjector
from .valid import image_extents, masked_mean, masked_sum, valid_cells, valid_extents

__all__ = [
    "ABF",
    "ADAPTERS",
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
    "crosskd_box_loss",
    "cwd_loss",
    "decoupled_mean",
    "defeat_adapter",
    "defeat_box_levels",
    "defeat_feature_loss",
    "defeat_fg_masks",
    "fgd_attention",
    "fitnet_loss",
    "generalized_iou",
    "get_norm",
    "hcl_loss",
    "image_extents",
    "kd_loss",
    "kd_quality_focal_loss",
    "logit_mse_loss",
    "masked_mean",
    "masked_sum",
    "mask_logit_kd_loss",
    "mgd_random_mask",
    "pkd_loss",
    "select_class_deltas",
    "standardize_per_channel",
    "valid_cells",
    "valid_extents",
]
