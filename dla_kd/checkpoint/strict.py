"""Loading weights that must describe the whole model (teachers, extracted students)."""
import logging
import os
from typing import Tuple

from torch import nn

from .checkpointer import DLACheckpointer
from .files import UnreadableCheckpointError

logger = logging.getLogger(__name__)


class IncompleteCheckpointError(RuntimeError):
    """A checkpoint leaves some of the model's tensors missing or of the wrong shape."""


class _KeyRecordingCheckpointer(DLACheckpointer):
    incompatible = None

    def _log_incompatible_keys(self, incompatible) -> None:
        self.incompatible = incompatible
        super()._log_incompatible_keys(incompatible)


def load_weights_strict(
    model: nn.Module, path: str, what: str, optional_prefixes: Tuple[str, ...] = (), allow_partial: bool = False
) -> None:
    """Load ``path`` into ``model`` through :class:`DLACheckpointer`, refusing partial loads: a
    model with missing or wrongly-shaped tensors is partly random and silently wrong.

    ``what`` names the file in messages, e.g. "Teacher weights (DISTILL.TEACHER.WEIGHTS)".
    Unused tensors in the file are logged, not fatal; so are missing tensors whose names start
    with ``optional_prefixes`` (e.g. training-only modules when evaluating). ``allow_partial``
    turns the error into a warning (the user's explicit choice). A truncated or non-checkpoint
    file raises :class:`UnreadableCheckpointError` naming it.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} not found")
    checkpointer = _KeyRecordingCheckpointer(model)
    try:
        checkpointer.load(path)
    except UnreadableCheckpointError as e:
        raise UnreadableCheckpointError(f"{what}: {e}") from e.__cause__
    inc = checkpointer.incompatible
    if inc is None:
        return
    missing = [k for k in inc.missing_keys
               if not k.endswith("num_batches_tracked") and not k.startswith(optional_prefixes)]
    if missing or inc.incorrect_shapes:
        shapes = [f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in inc.incorrect_shapes]
        message = (
            f"{what} {path} does not match the model: {len(missing)} missing keys "
            f"{missing[:8]}{' ...' if len(missing) > 8 else ''}; {len(shapes)} shape mismatches {shapes[:4]}. "
            "Check that the config is the one these weights were trained with."
        )
        if not allow_partial:
            raise IncompleteCheckpointError(message)
        logger.warning(f"{message} Loaded anyway (partial weights allowed): the rest of the model is random.")
    if inc.unexpected_keys:
        logger.warning(f"{what} {path}: {len(inc.unexpected_keys)} unused keys, e.g. {inc.unexpected_keys[:5]}")
