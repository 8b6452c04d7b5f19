"""DiT's multi-scale adapter and the Detectron2 backbone around any plain (single-stride) ViT.

A plain ViT yields one stride (its patch size). DiT (unilm ``ditod/beit.py``, ``fpn1..fpn4``)
taps four blocks and turns them into strides 4, 8, 16, 32 for FPN; for patch 16:

* stride 4:  ConvTranspose2d(2, 2) -> Norm -> GELU -> ConvTranspose2d(2, 2)   (4x up)
* stride 8:  ConvTranspose2d(2, 2)                                           (2x up)
* stride 16: identity
* stride 32: MaxPool2d(2)                                                     (2x down)

One implementation serves DiT/BEiT (``beit.BeitEncoder``) and timm ViTs (``timm_backbone``).
"""

import math
from typing import Dict, List, Sequence

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import Backbone

from .beit import BeitEncoder

# Output strides of the adapter, shallowest tap first; features are named "stride<s>".
ADAPTER_STRIDES = (4, 8, 16, 32)
SIZE_DIVISIBILITY = ADAPTER_STRIDES[-1]


def stride_feature_name(stride: int) -> str:
    """The feature name dla-kd backbones give their output of ``stride`` (e.g. "stride8")."""
    return f"stride{stride}"


ADAPTER_FEATURES = tuple(stride_feature_name(s) for s in ADAPTER_STRIDES)


def _upsample_branch(channels: int, num_steps: int, norm: str) -> nn.Sequential:
    """``num_steps`` 2x transposed convs, Norm + GELU between consecutive ones."""
    layers: List[nn.Module] = []
    for step in range(num_steps):
        if step > 0:
            layers += [get_norm(norm, channels), nn.GELU()]
        layers.append(nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def _resample_branch(channels: int, in_stride: int, out_stride: int, norm: str) -> nn.Module:
    if out_stride == in_stride:
        return nn.Identity()
    if out_stride > in_stride:
        factor = out_stride // in_stride
        return nn.MaxPool2d(kernel_size=factor, stride=factor)
    return _upsample_branch(channels, int(math.log2(in_stride // out_stride)), norm)


class MultiScaleAdapter(nn.Module):
    """Four maps of one stride -> maps at strides 4, 8, 16, 32 (DiT's ``fpn1..fpn4``).

    Input: list of 4 tensors ``(N, C, H/s, W/s)`` (``s = in_stride``), shallowest block first.
    Output: ``{"stride4": (N, C, H/4, W/4), ..., "stride32": (N, C, H/32, W/32)}`` restricted to
    ``out_features``; the i-th input feeds the i-th stride. Only branches in ``out_features`` are built.
    """

    def __init__(self, channels: int, in_stride: int, out_features: Sequence[str] = ADAPTER_FEATURES, norm: str = "BN"):
        super().__init__()
        unknown = [f for f in out_features if f not in ADAPTER_FEATURES]
        if unknown or not out_features:
            raise ValueError(
                f"Adapter out_features must be a non-empty subset of {ADAPTER_FEATURES}, got {list(out_features)}"
            )
        if in_stride < 1 or in_stride & (in_stride - 1):
            raise ValueError(f"The adapter needs a power-of-two patch size, got {in_stride}")
        self.channels = channels
        self.in_stride = in_stride
        self.out_features = [f for f in ADAPTER_FEATURES if f in out_features]
        self.branches = nn.ModuleDict(
            {
                name: _resample_branch(channels, in_stride, stride, norm)
                for name, stride in zip(ADAPTER_FEATURES, ADAPTER_STRIDES)
                if name in self.out_features
            }
        )

    def forward(self, taps: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        if len(taps) != len(ADAPTER_FEATURES):
            raise ValueError(f"The adapter takes {len(ADAPTER_FEATURES)} feature maps, got {len(taps)}")
        return {name: self.branches[name](tap) for name, tap in zip(ADAPTER_FEATURES, taps) if name in self.branches}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        strides = dict(zip(ADAPTER_FEATURES, ADAPTER_STRIDES))
        return {name: ShapeSpec(channels=self.channels, stride=strides[name]) for name in self.out_features}


class ViTAdapterBackbone(Backbone):
    """A plain ViT encoder + :class:`MultiScaleAdapter`, as a Detectron2 ``Backbone``.

    ``encoder`` is any module with attributes ``embed_dim``, ``patch_size`` and
    ``forward(x: (N, 3, H, W)) -> list of 4 tensors (N, embed_dim, H/patch, W/patch)``.

    Input: ``(N, 3, H, W)`` with H, W multiples of 32 (Detectron2 pads to ``size_divisibility``).
    Output: ``{"stride4": (N, C, H/4, W/4), "stride8": ..., "stride16": ..., "stride32": (N, C, H/32, W/32)}``
    (the subset in ``out_features``), ``C = encoder.embed_dim``.
    """

    @configurable
    def __init__(self, *, encoder: nn.Module, out_features: Sequence[str] = ADAPTER_FEATURES, adapter_norm: str = "BN"):
        super().__init__()
        self.encoder = encoder
        self.adapter = MultiScaleAdapter(encoder.embed_dim, encoder.patch_size, out_features, adapter_norm)
        self._out_features = list(self.adapter.out_features)
        shapes = self.adapter.output_shape()
        self._out_feature_channels = {k: v.channels for k, v in shapes.items()}
        self._out_feature_strides = {k: v.stride for k, v in shapes.items()}

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        # From a config: the MODEL.VIT (BEiT/DiT) encoder; timm ViTs are built with their own encoder.
        return {
            "encoder": BeitEncoder(cfg, input_shape),
            "out_features": cfg.MODEL.VIT.OUT_FEATURES,
            "adapter_norm": cfg.MODEL.VIT.ADAPTER_NORM,
        }

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} takes (N, C, H, W) images, got shape {tuple(x.shape)}")
        if x.shape[-2] % SIZE_DIVISIBILITY or x.shape[-1] % SIZE_DIVISIBILITY:
            raise ValueError(
                f"{type(self).__name__} needs H and W divisible by {SIZE_DIVISIBILITY}, got {tuple(x.shape[-2:])}"
            )
        return self.adapter(self.encoder(x))

    @property
    def size_divisibility(self) -> int:
        return SIZE_DIVISIBILITY

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return {"size_divisibility": SIZE_DIVISIBILITY}
