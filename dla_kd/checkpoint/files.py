"""Checkpoint files on disk: written atomically, read with errors that name the file.

A process killed while ``torch.save`` writes leaves a truncated file; torch then reports
"PytorchStreamReader failed reading zip archive" without saying which file. Here a file appears
under its final name only once it is complete (:func:`atomic_write`), and reading errors name the
file (:class:`UnreadableCheckpointError`, :func:`checkpoint_problem`).
"""
import logging
import os
from typing import Optional

import torch

from ..utils.files import atomic_write

logger = logging.getLogger(__name__)


class UnreadableCheckpointError(RuntimeError):
    """A checkpoint file is truncated, empty or not a checkpoint at all."""


def unreadable_message(path: str, error: BaseException) -> str:
    """What to tell a user about a checkpoint ``path`` that ``torch.load`` (or pickle) refused."""
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    return (
        f"Checkpoint {path} ({size} bytes) is truncated or not a checkpoint "
        f"({type(error).__name__}: {error}); a run killed while saving leaves such a file: "
        "use another checkpoint or re-create it"
    )


def checkpoint_problem(path: str) -> Optional[str]:
    """``None`` if ``path`` is a complete training checkpoint (``torch.load`` reads it and it has
    a ``"model"`` entry), otherwise why it cannot be used, naming the file."""
    if not os.path.isfile(path):
        return f"checkpoint {path} does not exist"
    try:
        data = torch.load(path, map_location="cpu")
    except OSError as e:
        return f"checkpoint {path} cannot be read: {e}"
    except Exception as e:  # torch/pickle raise RuntimeError, EOFError, UnpicklingError, ...
        return unreadable_message(path, e)
    if not isinstance(data, dict) or "model" not in data:
        return f"checkpoint {path} is not a training checkpoint (no 'model' entry)"
    return None


class SafeFilesMixin:
    """File handling for fvcore's ``Checkpointer`` (mixed into ``DLACheckpointer``):

    * ``save`` and ``tag_last_checkpoint`` write atomically (:func:`atomic_write`): a run killed
      while saving leaves the previous ``model_*.pth`` and ``last_checkpoint`` as they were, never
      a partial file under the final name;
    * an empty ``last_checkpoint`` counts as no checkpoint (with a warning) instead of fvcore's
      "Checkpoint ... not found!";
    * a file ``torch.load`` cannot read raises :class:`UnreadableCheckpointError` naming it.
    """

    _warned_empty_tag = False

    def save(self, name: str, **kwargs) -> None:
        """fvcore's ``save``: model, checkpointables and ``kwargs`` into ``<save_dir>/<name>.pth``,
        then ``last_checkpoint`` names it; both written atomically."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        tag = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(tag, lambda f: f.write(last_filename_basename.encode()))

    def has_checkpoint(self) -> bool:
        if not super().has_checkpoint():
            return False
        if self.get_checkpoint_file() != os.path.join(self.save_dir, ""):
            return True
        if not self._warned_empty_tag:
            tag = os.path.join(self.save_dir, "last_checkpoint")
            logger.warning(f"{tag} is empty (a save was interrupted): treated as no checkpoint")
            self._warned_empty_tag = True
        return False

    def _load_file(self, filename):
        try:
            return super()._load_file(filename)
        except OSError:
            raise
        except Exception as e:  # torch/pickle: RuntimeError, EOFError, UnpicklingError, ...
            raise UnreadableCheckpointError(unreadable_message(filename, e)) from e
