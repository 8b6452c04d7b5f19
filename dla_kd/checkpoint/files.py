"""Checkpoint files on disk: written atomically, read with errors that name the file.

A process killed while ``torch.save`` writes leaves a truncated file; torch then reports
"PytorchStreamReader failed reading zip archive" without saying which file. Here a file appears
under its final name only once it is complete (:func:`atomic_write`), and reading errors name the
file (:class:`UnreadableCheckpointError`, :func:`checkpoint_problem`).
"""
import glob
import logging
import os
import re
from typing import List, Optional

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


_MODEL_FILE = re.compile(r"^model_(\d+|final)\.pth$")
# Temporaries of atomic_write (``<name>.tmp``, ``<name>.<pid>.<thread>.tmp``) of the files only a
# training writes: checkpoints, last_checkpoint, config records, metrics (evaluations may run beside it).
_TRAINING_TEMPORARY = re.compile(
    r"^(model_\w+\.pth|last_checkpoint|config(_resume_\d+)?\.yaml|metrics(_discarded_\d+)?\.json)(\.\d+\.\d+)?\.tmp$"
)


def model_files_newest_first(folder: str) -> List[str]:
    """``model_final.pth`` then ``model_<N>.pth`` by decreasing N, of ``folder``."""
    found = []
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        m = _MODEL_FILE.match(name)
        if m:
            found.append((float("inf") if m.group(1) == "final" else int(m.group(1)), os.path.join(folder, name)))
    return [path for _, path in sorted(found, reverse=True)]


def newest_complete_checkpoint(folder: str) -> Optional[str]:
    """The newest ``model_*.pth`` of ``folder`` that :func:`checkpoint_problem` accepts."""
    for path in model_files_newest_first(folder):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning(f"Skipping {path}: {problem}")
    return None


def remove_training_temporaries(folder: str) -> List[str]:
    """Remove what saves killed mid-write left in ``folder`` (``model_*.pth.tmp``,
    ``last_checkpoint.tmp``, ``config*.yaml.tmp``, ``metrics*.json.tmp``); returns the removed
    paths. Call it only while holding the folder's training lock (no other training writes there
    then; evaluations write other names)."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(folder), "*.tmp")):
        if _TRAINING_TEMPORARY.match(os.path.basename(path)):
            try:
                os.remove(path)
                removed.append(path)
            except FileNotFoundError:
                pass
    if removed:
        logger.warning(f"Removed {len(removed)} temporary files of interrupted saves: {removed}")
    return removed


class SafeFilesMixin:
    """File handling for fvcore's ``Checkpointer`` (mixed into ``DLACheckpointer``):

    * ``save`` and ``tag_last_checkpoint`` write atomically (:func:`atomic_write`): a run killed
      while saving leaves the previous ``model_*.pth`` and ``last_checkpoint`` as they were, never
      a partial file under the final name;
    * an empty ``last_checkpoint``, or one naming a file that is not there, points to the newest
      complete ``model_*.pth`` beside it (with a warning), or counts as no checkpoint when there is
      none, instead of fvcore's "Checkpoint ... not found!" or a restart from iteration 0;
    * a file ``torch.load`` cannot read raises :class:`UnreadableCheckpointError` naming it.
    """

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

    _fallback = None  # (tag content, file chosen) of a damaged last_checkpoint

    def get_checkpoint_file(self) -> str:
        named = super().get_checkpoint_file()
        if not named or os.path.isfile(named):
            return named
        tag = os.path.join(self.save_dir, "last_checkpoint")
        if self._fallback is None or self._fallback[0] != named:
            chosen = newest_complete_checkpoint(self.save_dir)
            what = "is empty" if named == os.path.join(self.save_dir, "") else f"names {named}, which does not exist"
            if chosen:
                logger.warning(f"{tag} {what} (a save was interrupted): using the newest complete checkpoint {chosen}")
            else:
                logger.warning(f"{tag} {what} (a save was interrupted) and no complete model_*.pth is beside it: "
                               "treated as no checkpoint")
            self._fallback = (named, chosen)
        return self._fallback[1] or os.path.join(self.save_dir, "")

    def has_checkpoint(self) -> bool:
        if not super().has_checkpoint():
            return False
        return self.get_checkpoint_file() != os.path.join(self.save_dir, "")

    def _load_file(self, filename):
        try:
            return super()._load_file(filename)
        except OSError:
            raise
        except Exception as e:  # torch/pickle: RuntimeError, EOFError, UnpicklingError, ...
            raise UnreadableCheckpointError(unreadable_message(filename, e)) from e
