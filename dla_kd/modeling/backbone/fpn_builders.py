"""The backbones dla-kd registers in Detectron2's ``BACKBONE_REGISTRY``: a bottom-up network
(``MODEL.VIT`` or ``MODEL.TIMM``) + Detectron2's FPN with a max-pooled p6 (``MODEL.FPN.*``).

Output of both: ``{"p2": (N, C, H/4, W/4), ..., "p6": (N, C, H/64, W/64)}``,
``C = MODEL.FPN.OUT_CHANNELS``, for ``MODEL.FPN.IN_FEATURES = [stride4, stride8, stride16, stride32]``.
"""

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from .timm_backbone import build_timm_bottom_up
from .vit_adapter import ViTAdapterBackbone


def fpn_on(cfg, bottom_up: Backbone) -> FPN:
    """Detectron2's FPN (``MODEL.FPN``, p6 by max-pooling) on ``bottom_up``."""
    missing = [f for f in cfg.MODEL.FPN.IN_FEATURES if f not in bottom_up.output_shape()]
    if missing:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES {list(cfg.MODEL.FPN.IN_FEATURES)} names {missing}, which "
            f"{type(bottom_up).__name__} does not output (it has {list(bottom_up.output_shape())})"
        )
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_vit_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """BEiT/DiT ViT (``MODEL.VIT``) + DiT's multi-scale adapter + FPN."""
    return fpn_on(cfg, ViTAdapterBackbone(cfg, input_shape))


@BACKBONE_REGISTRY.register()
def build_timm_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """timm model (``MODEL.TIMM``; plain ViTs through the multi-scale adapter) + FPN."""
    return fpn_on(cfg, build_timm_bottom_up(cfg, input_shape))
