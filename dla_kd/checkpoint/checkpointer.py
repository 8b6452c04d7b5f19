"""Detectron2's checkpointer, taught the checkpoint formats dla-kd meets.

* Plain-detector weights into a distillation model: a checkpoint of a plain ``GeneralizedRCNN``
  (keys ``backbone.*``, ``roi_heads.*``) loaded into ``DistillGeneralizedRCNN`` goes to its
  student (keys ``student.*``). The teacher is never part of a checkpoint.
* Plain backbone names into a wrapped backbone: a SimKD student's backbone sits under
  ``backbone.inner.*`` (``ProjectedBackbone``); a plain checkpoint's ``backbone.*`` goes there.
* A distillation checkpoint into a plain model: the ``student.*`` tensors are taken (prefix
  stripped); training-only modules (``distillers.*``: adapters, projectors of the losses;
  ``balancer.*``: the calibrated KD weights) are dropped and counted in the log. This is how a
  distilled student is extracted and evaluated.
* Foreign formats (e.g. DiT/BEiT pretraining files) are rewritten by the converters in
  ``CHECKPOINT_CONVERTERS`` before loading.
"""
import logging
from typing import Callable, Dict, FrozenSet, Iterable, List, NamedTuple

from detectron2.checkpoint import DetectionCheckpointer
from torch.nn.parallel import DistributedDataParallel

from .files import SafeFilesMixin

logger = logging.getLogger(__name__)

STUDENT_PREFIX = "student."
# distillers.*: the losses' adapters and projectors; balancer.*: DISTILL.BALANCE's calibration state.
TRAINING_ONLY_PREFIXES = ("distillers.", "balancer.")
WRAPPED_BACKBONE, PLAIN_BACKBONE = "backbone.inner.", "backbone."  # ProjectedBackbone.inner

# Functions (model_state_dict, checkpoint_state_dict) -> checkpoint_state_dict or None (not mine).
CHECKPOINT_CONVERTERS: List[Callable[[Dict, Dict], Dict]] = []


def _unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


def is_distillation_state(state: Dict) -> bool:
    """True for the model state of a ``DistillGeneralizedRCNN`` checkpoint."""
    return bool(state) and any(k.startswith(STUDENT_PREFIX) for k in state) and all(
        k.startswith((STUDENT_PREFIX,) + TRAINING_ONLY_PREFIXES) for k in state
    )


def student_state(state: Dict) -> Dict:
    """The student's tensors of a distillation checkpoint state, prefix stripped."""
    return {k[len(STUDENT_PREFIX):]: v for k, v in state.items() if k.startswith(STUDENT_PREFIX)}


def plain_name(name: str) -> str:
    """The name a tensor of a wrapped (SimKD) backbone has in a plain detector:
    ``student.backbone.inner.bottom_up.x`` -> ``student.backbone.bottom_up.x``."""
    return name.replace(WRAPPED_BACKBONE, PLAIN_BACKBONE, 1)


def to_model_names(state: Dict, model_keys: Iterable[str]) -> Dict:
    """``state`` with plain backbone names renamed to the model's wrapped ones where only the
    latter exist in the model (a plain checkpoint loaded into a SimKD student)."""
    model_keys = set(model_keys)
    wrapped = {plain_name(k): k for k in model_keys if WRAPPED_BACKBONE in k}
    renamed = {k: wrapped[k] for k in state if k not in model_keys and k in wrapped}
    if renamed:
        logger.info(f"Loading {len(renamed)} plain backbone tensors into the wrapped backbone ('{WRAPPED_BACKBONE}*')")
    return {renamed.get(k, k): v for k, v in state.items()}


class LoadedWeights(NamedTuple):
    """What the last ``DLACheckpointer`` load put into the model."""

    keys: FrozenSet[str]  # model state-dict names filled from the file (right name and shape)
    distillation: bool  # the file was a distillation checkpoint (its own, trained, student)


class DLACheckpointer(SafeFilesMixin, DetectionCheckpointer):
    """``DetectionCheckpointer`` that moves weights between plain and distillation models and
    runs format converters. Use it wherever Detectron2's checkpointer would be used. Files are
    written atomically and unreadable ones named (:class:`~dla_kd.checkpoint.files.SafeFilesMixin`).

    ``last_load`` (:class:`LoadedWeights`, ``None`` before any file was loaded) says which model
    tensors the last load filled and whether the file was a distillation checkpoint.
    """

    last_load = None

    def _load_model(self, checkpoint):
        state = checkpoint["model"]
        distillation = is_distillation_state(state)
        model = _unwrap(self.model)
        model_keys = model.state_dict()
        for convert in CHECKPOINT_CONVERTERS:
            converted = convert(model_keys, state)
            if converted is not None:
                state = converted
                break
        prefix = getattr(model, "plain_checkpoint_prefix", "")
        # Name-matching heuristics (.pkl files) match by suffix and find the student themselves.
        heuristic = checkpoint.get("matching_heuristics", False)
        if prefix and state and not heuristic and not any(k.startswith(prefix) for k in state):
            logger.info(f"Checkpoint holds a plain detector: loading it into '{prefix}*'")
            state = {prefix + k: v for k, v in state.items()}
        elif not prefix and distillation:
            dropped = sum(1 for k in state if k.startswith(TRAINING_ONLY_PREFIXES))
            logger.info(f"Distillation checkpoint: loading its student; {dropped} training-only tensors dropped")
            state = student_state(state)
        if not heuristic:
            state = to_model_names(state, model_keys)
        checkpoint["model"] = state
        incompatible = super()._load_model(checkpoint)
        filled = frozenset(model_keys) - set(incompatible.missing_keys)
        self.last_load = LoadedWeights(filled, distillation)
        return incompatible
