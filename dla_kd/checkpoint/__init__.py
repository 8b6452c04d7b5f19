"""Checkpoint loading: Detectron2's checkpointer plus dla-kd's format converters."""
from .checkpointer import CHECKPOINT_CONVERTERS, DLACheckpointer, is_distillation_state, student_state
from .strict import IncompleteCheckpointError, load_weights_strict
from . import converters  # noqa: F401  (registers the DiT/BEiT converter)

__all__ = [
    "CHECKPOINT_CONVERTERS", "DLACheckpointer", "IncompleteCheckpointError", "is_distillation_state",
    "load_weights_strict", "student_state",
]
