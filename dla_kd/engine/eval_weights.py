"""The weights of ``tools/train_net.py --eval-only``, loaded strictly.

Detectron2 loads whatever matches and only logs fvcore's "skip loading" for the rest, so a
checkpoint of another architecture evaluates a partly random model and exits 0. Here missing or
wrongly-shaped tensors are an error (as for teachers, predict and export) unless the user opts
out with ``--allow-partial-weights``. Training-only tensors (distillation adapters) may be absent:
evaluation runs the student alone.
"""
from detectron2.utils.file_io import PathManager

from ..checkpoint import DLACheckpointer, IncompleteCheckpointError, load_weights_strict
from ..checkpoint.checkpointer import TRAINING_ONLY_PREFIXES

ALLOW_PARTIAL_FLAG = "--allow-partial-weights"


def load_eval_weights(cfg, model, resume: bool = False, allow_partial: bool = False) -> str:
    """Load into ``model`` the last checkpoint of ``OUTPUT_DIR`` (``resume`` and one exists) or
    ``MODEL.WEIGHTS``; returns the file. Raises ``ValueError`` when there is none,
    ``FileNotFoundError``, ``UnreadableCheckpointError`` (truncated file) or
    ``IncompleteCheckpointError`` (missing/mis-shaped tensors, unless ``allow_partial``)."""
    path, what = cfg.MODEL.WEIGHTS, "Weights to evaluate (MODEL.WEIGHTS)"
    checkpointer = DLACheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    if resume and checkpointer.has_checkpoint():
        path, what = checkpointer.get_checkpoint_file(), "Weights to evaluate (last_checkpoint of OUTPUT_DIR)"
    if not path:
        raise ValueError("--eval-only needs the checkpoint to evaluate: add MODEL.WEIGHTS path/to/model.pth")
    try:
        load_weights_strict(model, PathManager.get_local_path(path), what, TRAINING_ONLY_PREFIXES, allow_partial)
    except IncompleteCheckpointError as e:
        raise IncompleteCheckpointError(f"{e} To evaluate it anyway (partly random): {ALLOW_PARTIAL_FLAG}.") from None
    return path
