"""Any timm model as a Detectron2 backbone (``MODEL.TIMM``).

The model is built with ``features_only=True`` (never downloading weights). Hierarchical models
(ResNets, MobileNets, EfficientNets, ConvNeXts ...) return one map per feature level and feed FPN
directly (:class:`TimmFeatureBackbone`); plain ViTs (every level at the same stride, e.g.
``vit_tiny_patch16_224``, ``deit_small_patch16_224``) go through DiT's multi-scale adapter
(:class:`~.vit_adapter.ViTAdapterBackbone` around :class:`TimmViTEncoder`).
"""

import logging
from typing import Dict, List, Sequence

import timm
import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone

from ..init_sources import record_init_source
from .beit import check_out_indices, dit_out_indices
from .norm import convert_batchnorm
from .timm_pretrained import load_timm_checkpoint
from .vit_adapter import ViTAdapterBackbone, stride_feature_name

logger = logging.getLogger(__name__)


def _create(name: str, **kwargs) -> nn.Module:
    # ViTs need dynamic_img_size to run at detection sizes; models without it reject the argument.
    try:
        return timm.create_model(name, dynamic_img_size=True, **kwargs)
    except TypeError as e:
        if "dynamic_img_size" not in str(e):
            raise
    return timm.create_model(name, **kwargs)


def is_single_stride(body: nn.Module) -> bool:
    """True for plain ViTs: every feature level of the ``features_only`` model has one stride."""
    return len(set(body.feature_info.reduction())) == 1


def _default_out_indices(body: nn.Module) -> List[int]:
    if is_single_stride(body):
        return dit_out_indices(len(body.model.blocks))
    return list(body.feature_info.out_indices)[-4:]


def _num_levels(name: str, **kwargs) -> str:
    body = _create(name, **kwargs)
    if is_single_stride(body):
        return f"{len(body.model.blocks)} blocks (indices 0..{len(body.model.blocks) - 1})"
    return f"feature levels {list(body.feature_info.out_indices)} (strides {body.feature_info.reduction()})"


def create_timm_features(name: str, out_indices: Sequence[int] = (), in_chans: int = 3, **kwargs) -> nn.Module:
    """``timm.create_model(name, features_only=True, out_indices=...)`` with clear errors.

    Empty ``out_indices``: the last four feature levels (CNNs) or DiT's evenly spaced blocks (ViTs).
    Output of the returned model: list of ``(N, C_i, H/s_i, W/s_i)``, see its ``feature_info``.
    """
    if not timm.is_model(name):
        similar = timm.list_models(f"*{name.split('_')[0]}*")[:10]
        raise ValueError(f"Unknown timm model {name!r} (MODEL.TIMM.NAME); similar names: {similar}")
    kwargs = dict(kwargs, pretrained=False, features_only=True, in_chans=in_chans)
    if not out_indices:
        body = _create(name, **kwargs)
        out_indices = _default_out_indices(body)
        if list(body.feature_info.out_indices) == out_indices:
            return body
    try:
        body = _create(name, out_indices=tuple(int(i) for i in out_indices), **kwargs)
    except (IndexError, AssertionError) as e:
        raise ValueError(
            f"MODEL.TIMM.OUT_INDICES {list(out_indices)} out of range for timm model {name!r}, "
            f"which has {_num_levels(name, **kwargs)}"
        ) from e
    if is_single_stride(body):  # the adapter takes 4 blocks, shallow to deep (range checked by timm)
        check_out_indices(out_indices, len(body.model.blocks), "MODEL.TIMM.OUT_INDICES")
    return body


def build_timm_body(cfg, input_shape: ShapeSpec) -> nn.Module:
    """The timm ``features_only`` model of ``MODEL.TIMM``: created, pretrained weights loaded
    (``PRETRAINED_PATH``), BatchNorm converted (``NORM``), gradient checkpointing set."""
    c = cfg.MODEL.TIMM
    extra = {"drop_path_rate": c.DROP_PATH_RATE} if c.DROP_PATH_RATE else {}
    body = create_timm_features(c.NAME, c.OUT_INDICES, in_chans=input_shape.channels or 3, **extra)
    if c.PRETRAINED_PATH:
        report = load_timm_checkpoint(body, c.PRETRAINED_PATH, c.NAME)
        record_init_source(body, report.loaded, "MODEL.TIMM.PRETRAINED_PATH")
    elif c.NORM == "FrozenBN" and any(isinstance(m, nn.BatchNorm2d) for m in body.modules()):
        logger.warning(
            f"MODEL.TIMM.NORM is FrozenBN but MODEL.TIMM.PRETRAINED_PATH is empty: the BatchNorm statistics "
            f"of {c.NAME} stay at their init unless MODEL.WEIGHTS provides them."
        )
    body = convert_batchnorm(body, c.NORM)
    if c.GRAD_CKPT:
        target = body.model if is_single_stride(body) else body
        if not hasattr(target, "set_grad_checkpointing"):
            raise ValueError(f"timm model {c.NAME!r} does not support gradient checkpointing (MODEL.TIMM.GRAD_CKPT)")
        target.set_grad_checkpointing(True)
    return body


class TimmFeatureBackbone(Backbone):
    """A hierarchical timm ``features_only`` model as a Detectron2 backbone.

    Input: ``(N, 3, H, W)``. Output: ``{"stride<s>": (N, C_s, H/s, W/s)}`` for each feature
    level of ``body`` (e.g. resnet18 with out_indices 1..4: stride4/8/16/32 with 64/128/256/512 channels).
    """

    @configurable
    def __init__(self, *, body: nn.Module):
        super().__init__()
        self.body = body
        strides, channels = body.feature_info.reduction(), body.feature_info.channels()
        self._out_features = [stride_feature_name(s) for s in strides]
        if len(set(self._out_features)) != len(self._out_features):
            raise ValueError(f"Two feature levels share a stride ({strides}): choose other MODEL.TIMM.OUT_INDICES")
        self._out_feature_strides = dict(zip(self._out_features, strides))
        self._out_feature_channels = dict(zip(self._out_features, channels))

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        return {"body": build_timm_body(cfg, input_shape)}

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return dict(zip(self._out_features, self.body(x)))

    @property
    def size_divisibility(self) -> int:
        return max(self._out_feature_strides.values())

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return {"size_divisibility": self.size_divisibility}


class TimmViTEncoder(nn.Module):
    """A plain timm ViT (``FeatureGetterNet``) as encoder for :class:`ViTAdapterBackbone`.

    Input ``(N, 3, H, W)``; output list of 4 maps ``(N, embed_dim, H/patch, W/patch)``.
    """

    def __init__(self, body: nn.Module):
        super().__init__()
        if not is_single_stride(body) or len(body.feature_info.reduction()) != 4:
            raise ValueError("TimmViTEncoder takes a plain ViT features model with 4 out_indices")
        self.body = body
        self.embed_dim = body.feature_info.channels()[0]
        self.patch_size = body.feature_info.reduction()[0]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return list(self.body(x))


def build_timm_bottom_up(cfg, input_shape: ShapeSpec) -> Backbone:
    """``MODEL.TIMM`` -> :class:`TimmFeatureBackbone`, or :class:`ViTAdapterBackbone` for plain ViTs
    (with ``MODEL.VIT.OUT_FEATURES`` and ``MODEL.VIT.ADAPTER_NORM``)."""
    body = build_timm_body(cfg, input_shape)
    if is_single_stride(body):
        return ViTAdapterBackbone(
            encoder=TimmViTEncoder(body),
            out_features=cfg.MODEL.VIT.OUT_FEATURES,
            adapter_norm=cfg.MODEL.VIT.ADAPTER_NORM,
        )
    return TimmFeatureBackbone(body=body)
