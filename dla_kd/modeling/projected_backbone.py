"""The SimKD student's backbone: any backbone followed by a projector into the teacher's
feature space (Chen et al., CVPR 2022), so that the teacher's RPN and ROI heads can be reused.

One projector is shared by all output levels, as the reused FPN heads are shared by all levels.
"""
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec, build_backbone
from torch import nn

from ..distill.losses import SimKDProjector


class ProjectedBackbone(Backbone):
    """``inner`` backbone, then ``projector`` on every output: (N, C_in, H, W) -> (N, C_out, H, W)."""

    def __init__(self, inner: Backbone, projector: nn.Module, out_channels: int):
        super().__init__()
        self.inner = inner
        self.projector = projector
        self._out_channels = out_channels

    def forward(self, x):
        return {name: self.projector(f) for name, f in self.inner(x).items()}

    def output_shape(self):
        return {
            name: ShapeSpec(channels=self._out_channels, stride=s.stride)
            for name, s in self.inner.output_shape().items()
        }

    @property
    def size_divisibility(self):
        return self.inner.size_divisibility

    @property
    def padding_constraints(self):
        return self.inner.padding_constraints


@BACKBONE_REGISTRY.register()
def build_projected_backbone(cfg, input_shape: ShapeSpec) -> ProjectedBackbone:
    """``MODEL.PROJECTED_BACKBONE.BACKBONE_NAME`` built from the same config, then the projector."""
    pcfg = cfg.MODEL.PROJECTED_BACKBONE
    if not pcfg.BACKBONE_NAME or pcfg.BACKBONE_NAME == "build_projected_backbone":
        raise ValueError("MODEL.PROJECTED_BACKBONE.BACKBONE_NAME must name the wrapped backbone")
    inner_cfg = cfg.clone()
    inner_cfg.defrost()
    inner_cfg.MODEL.BACKBONE.NAME = pcfg.BACKBONE_NAME
    inner = build_backbone(inner_cfg, input_shape)
    widths = {s.channels for s in inner.output_shape().values()}
    if len(widths) != 1:
        raise ValueError(f"A shared projector needs equal widths on all backbone outputs, got {sorted(widths)}")
    c_in = widths.pop()
    if pcfg.PROJECTOR == "identity":
        if c_in != pcfg.OUT_CHANNELS:
            raise ValueError(
                f"SimKD identity projector needs equal student/teacher widths, got {c_in} vs {pcfg.OUT_CHANNELS}"
            )
        projector = nn.Identity()
    elif pcfg.PROJECTOR == "bottleneck":
        projector = SimKDProjector(c_in, pcfg.OUT_CHANNELS, factor=pcfg.FACTOR, norm=pcfg.NORM)
    else:
        raise ValueError(f"MODEL.PROJECTED_BACKBONE.PROJECTOR must be 'bottleneck' or 'identity', got {pcfg.PROJECTOR!r}")
    return ProjectedBackbone(inner, projector, pcfg.OUT_CHANNELS)
