"""The FrozenBN guard: training refuses FrozenBN layers that no source initialises.

A FrozenBN layer never updates its statistics and affine terms, so left at their random init
(mean 0, var 1, scale 1, shift 0) it stays wrong for the whole run. The check is per module: a
FrozenBN module is fine iff its ``weight`` and ``bias`` come from some source:

* ``MODEL.WEIGHTS``: the tensors the checkpointer actually filled (``DLACheckpointer.last_load``),
  not merely a non-empty path;
* ``MODEL.TIMM.PRETRAINED_PATH``: the tensors the timm file filled, inside the timm body only;
* the teacher of a distillation run: SimKD's reused heads and ``DISTILL.INIT_FROM_TEACHER``'s
  prefixes (both recorded with :mod:`dla_kd.modeling.init_sources`).
"""
from typing import Iterable, List

from torch import nn

from ..modeling.backbone.norm import FROZEN_NORMS
from ..modeling.init_sources import initialised_tensors

_SHOWN = 8


def uninitialised_frozen_norms(model: nn.Module, loaded_keys: Iterable[str] = ()) -> List[str]:
    """Names of the FrozenBN modules of ``model`` whose weight and bias are neither in
    ``loaded_keys`` (state-dict names filled by MODEL.WEIGHTS) nor recorded as initialised."""
    covered = set(loaded_keys) | set(initialised_tensors(model))
    return [
        name for name, m in model.named_modules()
        if isinstance(m, FROZEN_NORMS) and not {f"{name}.weight", f"{name}.bias"} <= covered
    ]


def check_frozen_norms_initialised(model: nn.Module, loaded_keys: Iterable[str] = ()) -> None:
    """Raise ``ValueError`` naming the FrozenBN modules of ``model`` no source initialises."""
    bare = uninitialised_frozen_norms(model, loaded_keys)
    if bare:
        more = f" and {len(bare) - _SHOWN} more" if len(bare) > _SHOWN else ""
        raise ValueError(
            f"{len(bare)} FrozenBN layers have no source of weights: {bare[:_SHOWN]}{more}. FrozenBN needs "
            "pretrained statistics, from MODEL.WEIGHTS (tensors it actually holds), MODEL.TIMM.PRETRAINED_PATH "
            "(the timm body only) or DISTILL.INIT_FROM_TEACHER (its PREFIXES). Point one of them at weights "
            "that cover these layers, or train them from scratch with GN/BN/SyncBN (MODEL.RESNETS.NORM, "
            "MODEL.FPN.NORM, MODEL.TIMM.NORM, ...; and MODEL.BACKBONE.FREEZE_AT 0)."
        )
