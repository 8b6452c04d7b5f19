"""Detectron2's checkpointer, taught the checkpoint formats dla-kd meets.

* Plain-detector weights into a distillation model: a checkpoint of a plain ``GeneralizedRCNN``
  (keys ``backbone.*``, ``roi_heads.*``) loaded into ``DistillGeneralizedRCNN`` goes to its
  student (keys ``student.*``). The teacher is never part of a checkpoint.
* A distillation checkpoint into a plain model: the ``student.*`` tensors are taken (prefix
  stripped); training-only modules (``distillers.*``: adapters, projectors of the losses) are
  dropped and counted in the log. This is how a distilled student is extracted and evaluated.
* Foreign formats (e.g. DiT/BEiT pretraining files) are rewritten by the converters in
  ``CHECKPOINT_CONVERTERS`` before loading.
"""
import logging
from typing import Callable, Dict, List

from detectron2.checkpoint import DetectionCheckpointer
from torch.nn.parallel import DistributedDataParallel

logger = logging.getLogger(__name__)

STUDENT_PREFIX = "student."
TRAINING_ONLY_PREFIXES = ("distillers.",)

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


class DLACheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that moves weights between plain and distillation models and
    runs format converters. Use it wherever Detectron2's checkpointer would be used."""

    def _load_model(self, checkpoint):
        state = checkpoint["model"]
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
        elif not prefix and is_distillation_state(state):
            dropped = sum(1 for k in state if k.startswith(TRAINING_ONLY_PREFIXES))
            logger.info(f"Distillation checkpoint: loading its student; {dropped} training-only tensors dropped")
            state = student_state(state)
        checkpoint["model"] = state
        return super()._load_model(checkpoint)
