"""Loading weights that must describe the whole model (teachers, extracted students)."""
import logging
import os

from torch import nn

from .checkpointer import DLACheckpointer

logger = logging.getLogger(__name__)


class IncompleteCheckpointError(RuntimeError):
    """A checkpoint leaves some of the model's tensors missing or of the wrong shape."""


class _KeyRecordingCheckpointer(DLACheckpointer):
    incompatible = None

    def _log_incompatible_keys(self, incompatible) -> None:
        self.incompatible = incompatible
        super()._log_incompatible_keys(incompatible)


def load_weights_strict(model: nn.Module, path: str, what: str) -> None:
    """Load ``path`` into ``model`` through :class:`DLACheckpointer`, refusing partial loads: a
    model with missing or wrongly-shaped tensors is partly random and silently wrong.

    ``what`` names the file in messages, e.g. "Teacher weights (DISTILL.TEACHER.WEIGHTS)".
    Unused tensors in the file are logged, not fatal.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} not found")
    checkpointer = _KeyRecordingCheckpointer(model)
    checkpointer.load(path)
    inc = checkpointer.incompatible
    if inc is None:
        return
    missing = [k for k in inc.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or inc.incorrect_shapes:
        shapes = [f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in inc.incorrect_shapes]
        raise IncompleteCheckpointError(
            f"{what} {path} does not match the model: {len(missing)} missing keys "
            f"{missing[:8]}{' ...' if len(missing) > 8 else ''}; {len(shapes)} shape mismatches {shapes[:4]}. "
            "Check that the config is the one these weights were trained with."
        )
    if inc.unexpected_keys:
        logger.warning(f"{what} {path}: {len(inc.unexpected_keys)} unused keys, e.g. {inc.unexpected_keys[:5]}")
