"""Backbones registered in Detectron2's BACKBONE_REGISTRY (importing this package registers them):

* ``build_vit_fpn_backbone``: BEiT/DiT ViT (``MODEL.VIT``) + DiT's multi-scale adapter + FPN;
* ``build_timm_fpn_backbone``: any timm model (``MODEL.TIMM``) + FPN (plain ViTs via the adapter).

Detectron2's own ``build_resnet_fpn_backbone`` covers R-18/34/50/101.
"""

from .beit import VIT_SIZES, BeitEncoder, RelativePositionBias, dit_out_indices
from .fpn_builders import build_timm_fpn_backbone, build_vit_fpn_backbone, fpn_on
from .norm import BATCHNORM_CONVERSIONS, convert_batchnorm
from .timm_backbone import TimmFeatureBackbone, TimmViTEncoder, build_timm_bottom_up, create_timm_features
from .timm_pretrained import LoadReport, load_timm_checkpoint
from .vit_adapter import ADAPTER_FEATURES, MultiScaleAdapter, ViTAdapterBackbone, stride_feature_name

__all__ = [
    "ADAPTER_FEATURES",
    "BATCHNORM_CONVERSIONS",
    "BeitEncoder",
    "LoadReport",
    "MultiScaleAdapter",
    "RelativePositionBias",
    "TimmFeatureBackbone",
    "TimmViTEncoder",
    "VIT_SIZES",
    "ViTAdapterBackbone",
    "build_timm_bottom_up",
    "build_timm_fpn_backbone",
    "build_vit_fpn_backbone",
    "convert_batchnorm",
    "create_timm_features",
    "dit_out_indices",
    "fpn_on",
    "load_timm_checkpoint",
    "stride_feature_name",
]
