"""Which tensors of a model were filled at build time, and from which source.

Builders that fill tensors from elsewhere (a timm pretrained file, the teacher of a distillation
run) record it on the module they filled; checks that must know whether a tensor is still at its
random init (the trainer's FrozenBN guard) read it back with :func:`initialised_tensors`.
Weights loaded later by the checkpointer (``MODEL.WEIGHTS``) are not recorded here: the
checkpointer reports them itself (``DLACheckpointer.last_load``).
"""
from typing import Dict, Iterable

from torch import nn

_ATTR = "_dla_kd_init_sources"


def record_init_source(module: nn.Module, keys: Iterable[str], source: str) -> None:
    """Record that the state-dict entries ``keys`` of ``module`` (names relative to it) were
    filled from ``source``, e.g. "MODEL.TIMM.PRETRAINED_PATH"."""
    sources = module.__dict__.setdefault(_ATTR, {})
    sources.update(dict.fromkeys(keys, source))


def initialised_tensors(model: nn.Module) -> Dict[str, str]:
    """Every entry recorded in ``model`` and its submodules: full state-dict name -> source."""
    out = {}
    for prefix, module in model.named_modules():
        for key, source in module.__dict__.get(_ATTR, {}).items():
            out[f"{prefix}.{key}" if prefix else key] = source
    return out
