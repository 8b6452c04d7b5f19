"""What happens to the BatchNorm layers of a timm model (``MODEL.TIMM.NORM``).

timm CNNs mix plain ``BatchNorm2d`` and ``BatchNormAct2d`` (BN with its activation inside, a
``BatchNorm2d`` subclass); every conversion here keeps the activation of the latter.
"""

import math
from typing import Callable, Dict

import torch
import torch.nn.functional as F

from timm.layers import (
    BatchNormAct2d,
    FrozenBatchNormAct2d,
    GroupNormAct,
    SyncBatchNormAct,
    convert_sync_batchnorm,
    freeze_batch_norm_2d,
)
from torch import nn

from detectron2.layers import FrozenBatchNorm2d


class FoldableFrozenBatchNormAct2d(FrozenBatchNormAct2d):
    """timm's ``FrozenBatchNormAct2d`` computed as Detectron2's ``FrozenBatchNorm2d`` is: where no
    gradient reaches the input (inference, export, frozen stages) by ``F.batch_norm``, which the
    ONNX exporter folds into the preceding convolution (timm's ``x * scale + bias`` stays a Mul and
    an Add after every conv: about a tenth of a MobileNetV3's CPU time, and int8 then quantizes
    around them); else by timm's arithmetic (no gradient for the frozen affine terms). Same
    buffers, state-dict keys and outputs. Input ``(N, C, H, W)``, any float dtype; statistics in
    their own dtype (float32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            return super().forward(x)
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return self.act(self.drop(x))


_PLAIN_BN = (nn.BatchNorm2d, nn.SyncBatchNorm)
_BN_ACT = (BatchNormAct2d, SyncBatchNormAct)
# What freezing produces: Detectron2's FrozenBN (also its ResNets' "FrozenBN") and timm's BN+act.
FROZEN_NORMS = (FrozenBatchNorm2d, FrozenBatchNormAct2d)
GN_GROUPS = 32


def _replace_batchnorm(module: nn.Module, convert: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Apply ``convert`` to every BatchNorm in ``module`` (recursively, in place); return the result."""
    if isinstance(module, _PLAIN_BN):
        return convert(module)
    for name, child in module.named_children():
        new_child = _replace_batchnorm(child, convert)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def _frozen(bn: nn.Module) -> nn.Module:
    # BN+act -> timm's FrozenBatchNormAct2d as its foldable subclass (same state: only the class
    # changes); plain BN -> Detectron2's FrozenBatchNorm2d (F.batch_norm at inference already).
    if not isinstance(bn, _BN_ACT):
        return FrozenBatchNorm2d.convert_frozen_batchnorm(bn)
    frozen = freeze_batch_norm_2d(bn)
    frozen.__class__ = FoldableFrozenBatchNormAct2d
    return frozen


def _group_norm(bn: nn.Module) -> nn.Module:
    groups = math.gcd(GN_GROUPS, bn.num_features)
    if isinstance(bn, _BN_ACT):
        gn = GroupNormAct(bn.num_features, num_groups=groups, eps=bn.eps, apply_act=False)
        gn.drop, gn.act = bn.drop, bn.act
        return gn
    return nn.GroupNorm(groups, bn.num_features, eps=bn.eps)


def keep_batchnorm(module: nn.Module) -> nn.Module:
    return module


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """BatchNorm -> FrozenBN (statistics and affine fixed): for pretrained weights."""
    return _replace_batchnorm(module, _frozen)


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """BatchNorm -> SyncBatchNorm (statistics over all GPUs)."""
    return convert_sync_batchnorm(module)


def batchnorm_to_groupnorm(module: nn.Module) -> nn.Module:
    """BatchNorm -> GroupNorm (gcd(32, C) groups), freshly initialised: for training from scratch."""
    return _replace_batchnorm(module, _group_norm)


BATCHNORM_CONVERSIONS: Dict[str, Callable[[nn.Module], nn.Module]] = {
    "": keep_batchnorm,
    "BN": keep_batchnorm,
    "FrozenBN": freeze_batchnorm,
    "SyncBN": sync_batchnorm,
    "GN": batchnorm_to_groupnorm,
}


def convert_batchnorm(module: nn.Module, norm: str) -> nn.Module:
    """Apply the ``MODEL.TIMM.NORM`` conversion ``norm`` to ``module``."""
    if norm not in BATCHNORM_CONVERSIONS:
        raise ValueError(f"MODEL.TIMM.NORM {norm!r} is not one of {sorted(BATCHNORM_CONVERSIONS)}")
    return BATCHNORM_CONVERSIONS[norm](module)
