"""Checkpoint loading: Detectron2's checkpointer plus dla-kd's format converters."""
from .checkpointer import (
    CHECKPOINT_CONVERTERS, DLACheckpointer, LoadedWeights, is_distillation_state, plain_name, student_state,
)
from .files import (
    UnreadableCheckpointError, atomic_write, checkpoint_problem, newest_complete_checkpoint, remove_training_temporaries,
)
from .strict import IncompleteCheckpointError, load_weights_strict
from . import converters  # noqa: F401  (registers the DiT/BEiT converter)

__all__ = [
    "CHECKPOINT_CONVERTERS", "DLACheckpointer", "IncompleteCheckpointError", "LoadedWeights", "is_distillation_state",
    "load_weights_strict", "plain_name", "student_state",
    "UnreadableCheckpointError", "atomic_write", "checkpoint_problem", "newest_complete_checkpoint",
    "remove_training_temporaries",
]
