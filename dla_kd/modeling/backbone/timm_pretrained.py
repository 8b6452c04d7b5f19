"""Loading a local timm checkpoint into a timm ``features_only`` model (``MODEL.TIMM.PRETRAINED_PATH``).

Checkpoints carry the names of the full timm model; the ``features_only`` wrappers rename some
modules: ViTs sit under ``model.`` (``FeatureGetterNet``) and flattened stages are named
``stages_0`` instead of ``stages.0`` (``FeatureListNet``). Each checkpoint key is matched to the
first of those spellings the model has. Heads and other keys the wrapper pruned end up unexpected.
"""

import logging
import sys
from typing import Dict, List, NamedTuple, Tuple

import timm
import torch
from torch import nn

logger = logging.getLogger(__name__)


class LoadReport(NamedTuple):
    loaded: List[str]  # model keys filled from the checkpoint
    missing: List[str]  # model keys the checkpoint did not fill
    unexpected: List[str]  # checkpoint keys with no place in the model
    mismatched: List[Tuple[str, tuple, tuple]]  # (model key, checkpoint shape, model shape)


def _feature_model_key(key: str, model_keys) -> str:
    for candidate in (key, "model." + key, key.replace(".", "_", 1)):
        if candidate in model_keys:
            return candidate
    return ""


def _apply_family_filter(state: Dict[str, torch.Tensor], body: nn.Module, model_name: str) -> Dict[str, torch.Tensor]:
    """Run the model family's ``checkpoint_filter_fn`` (e.g. ViT position-embedding resampling)
    on wrapped full models (``FeatureGetterNet.model``)."""
    inner = getattr(body, "model", None)
    module = sys.modules.get(timm.models.model_entrypoint(model_name).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if not isinstance(inner, nn.Module) or filter_fn is None:
        return state
    try:
        return filter_fn(state, inner)
    except Exception as e:  # the raw state still loads where names and shapes agree
        logger.warning(f"{module.__name__}.checkpoint_filter_fn failed ({e!r}); loading the checkpoint unfiltered")
        return state


def load_timm_checkpoint(body: nn.Module, path: str, model_name: str) -> LoadReport:
    """Load the timm checkpoint ``path`` into the ``features_only`` model ``body`` (of timm model
    ``model_name``), non-strictly; log and return what was loaded, missing, unexpected or of the
    wrong shape. Raises ``ValueError`` when no checkpoint key fits the model."""
    state = timm.models.load_state_dict(path, use_ema=False)
    state = _apply_family_filter(state, body, model_name)
    model_state = body.state_dict()
    to_load, unexpected, mismatched = {}, [], []
    for key, value in state.items():
        target = _feature_model_key(key, model_state)
        if not target:
            unexpected.append(key)
        elif tuple(value.shape) != tuple(model_state[target].shape):
            mismatched.append((target, tuple(value.shape), tuple(model_state[target].shape)))
        else:
            to_load[target] = value
    if not to_load:
        raise ValueError(
            f"No key of checkpoint {path} fits timm model {model_name!r} (checkpoint keys e.g. "
            f"{sorted(state)[:5]}, model keys e.g. {sorted(model_state)[:5]}): wrong file or MODEL.TIMM.NAME?"
        )
    body.load_state_dict(to_load, strict=False)
    # BatchNorm's num_batches_tracked is a step counter, not a weight (fp16 exports leave it out).
    missing = sorted(k for k in set(model_state) - set(to_load) if not k.endswith("num_batches_tracked"))
    report = LoadReport(sorted(to_load), missing, sorted(unexpected), mismatched)
    logger.info(f"Loaded {len(report.loaded)}/{len(model_state)} tensors of timm {model_name} from {path}")
    if missing:
        logger.warning(f"Missing in {path} (left at init): {missing}")
    if unexpected:
        logger.info(f"Unused keys of {path}: {report.unexpected}")
    if mismatched:
        logger.warning(f"Shape mismatch, not loaded (key, checkpoint, model): {mismatched}")
    return report
