"""Small helpers shared by the losses: graph-connected zeros and norm-layer construction."""

from typing import Optional

import torch
from torch import nn


def connected_zero(*tensors: torch.Tensor) -> torch.Tensor:
    """A scalar 0 that is part of the autograd graph of ``tensors`` (the student's inputs).

    Returned by losses that see empty input (no RoIs, no foreground) instead of a fresh
    ``torch.tensor(0.)``: ``backward()`` then gives zero gradients to everything upstream, so
    DDP without ``find_unused_parameters`` still sees every parameter used. Tensors that do not
    require grad are skipped; if none does, a plain zero on the first tensor's device is returned.
    """
    zero = None
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor):
            continue
        if zero is None:
            zero = t.new_zeros(())  # device / dtype of the first tensor
        if t.requires_grad:
            zero = zero + t.sum() * 0.0
    if zero is None:
        return torch.zeros(())
    return zero


def group_norm_groups(channels: int, max_groups: int = 32) -> int:
    """Largest number of groups <= ``max_groups`` that divides ``channels`` (32 for 256)."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def get_norm(norm: Optional[str], channels: int) -> nn.Module:
    """Norm layer by name for the trainable KD modules.

    ``""``/``None``: ``nn.Identity``; ``"BN"``: ``nn.BatchNorm2d`` (official ReviewKD / SimKD);
    ``"SyncBN"``: ``nn.SyncBatchNorm``; ``"GN"``: ``nn.GroupNorm`` with
    :func:`group_norm_groups` groups (32 for 256 channels; also works for narrow test widths).
    Any other string is passed to ``detectron2.layers.get_norm``.
    """
    if not norm:
        return nn.Identity()
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "SyncBN":
        return nn.SyncBatchNorm(channels)
    if norm == "GN":
        return nn.GroupNorm(group_norm_groups(channels), channels)
    from detectron2.layers import get_norm as d2_get_norm

    return d2_get_norm(norm, channels)


def as_teacher(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The teacher tensor as a constant: detached, in the student's dtype (a bf16 / fp16 teacher
    is compared in the student's precision)."""
    return t.detach().to(dtype=like.dtype)


def float32_pair(s: torch.Tensor, t: torch.Tensor):
    """(student in float32, teacher as a float32 constant): every loss compares and reduces in
    float32, whatever autocast (``SOLVER.AMP.ENABLED``) made of the student's outputs. In float16
    the squares and sums of features overflow (65,504) or underflow (6e-5 is the smallest normal),
    and pixel counts above 2,048 are no longer exact; the gradient flows back to the float16
    student through the cast."""
    s = s.float()
    return s, as_teacher(t, s)


def check_same_shape(s: torch.Tensor, t: torch.Tensor, what: str) -> None:
    if s.shape != t.shape:
        raise ValueError(
            f"{what}: student shape {tuple(s.shape)} != teacher shape {tuple(t.shape)}"
        )


def kaiming_uniform_a1_(conv: nn.Conv2d) -> None:
    """ReviewKD's init: ``kaiming_uniform_(a=1)`` on the weight (bias, if any, to 0)."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


__all__ = [
    "as_teacher",
    "connected_zero",
    "float32_pair",
    "get_norm",
    "group_norm_groups",
    "check_same_shape",
    "kaiming_uniform_a1_",
]
