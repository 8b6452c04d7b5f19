"""One run per output folder: a lock file that names its holder.

Two trainings in one ``OUTPUT_DIR`` would overwrite each other's checkpoints, ``last_checkpoint``,
logs and metrics and both exit 0. ``tools/train_net.py`` takes ``<OUTPUT_DIR>/train.lock``
(``--eval-only``: ``eval.lock``, see :func:`lock_name`) before anything is written there and
removes it at exit. The file is created atomically (``O_CREAT | O_EXCL``) and holds the holder's
PID, host, start time and command. A lock whose holder is gone (same host, PID not running) is
stale: it is taken over with a warning. Any other existing lock stops the run with
:class:`OutputDirLockedError` naming the holder.
"""
import json
import logging
import os
import socket
import sys
import time
from typing import Dict, Optional

logger = logging.getLogger(__name__)

# An unparsable lock younger than this is being written by its creator; older, its creator died.
_CREATION_GRACE_S = 10.0


class OutputDirLockedError(RuntimeError):
    """The output folder is locked by another run."""


def lock_name(eval_only: bool) -> str:
    """Training runs exclude each other (``train.lock``). Evaluations take ``eval.lock``: one
    evaluation per folder at a time (they write the same ``eval_<dataset>.json`` and
    ``inference/``), but a checkpoint can be evaluated while its training runs."""
    return "eval.lock" if eval_only else "train.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _describe(holder: Dict) -> str:
    if not holder:
        return "an unknown holder (unreadable lock file)"
    return (
        f"PID {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
        + (f" ({holder['command']})" if holder.get("command") else "")
    )


class OutputDirLock:
    """``with OutputDirLock(output_dir):`` holds ``<output_dir>/<name>`` for the block (a lock
    already taken with :meth:`acquire` is kept and released at the end of the block)."""

    def __init__(self, output_dir: str, name: str = "train.lock"):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, name)
        self.info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": " ".join(sys.argv),
        }
        self.held = False

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self.info, f)
            f.flush()
            os.fsync(f.fileno())
        return True

    def _read(self) -> Optional[Dict]:
        """The holder's record, ``{}`` if unparsable, ``None`` if the lock vanished meanwhile."""
        try:
            with open(self.path) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
        except ValueError:
            return {}
        return holder if isinstance(holder, dict) else {}

    def _is_stale(self, holder: Dict) -> bool:
        if not holder:  # unparsable: its creator died between creating and writing it
            try:
                return time.time() - os.path.getmtime(self.path) > _CREATION_GRACE_S
            except FileNotFoundError:
                return True
        if holder.get("host") != self.info["host"]:
            return False  # another machine's PID cannot be checked from here
        pid = holder.get("pid")
        return not isinstance(pid, int) or not _pid_alive(pid)

    def acquire(self) -> "OutputDirLock":
        os.makedirs(self.output_dir, exist_ok=True)
        for _ in range(3):  # a stale lock removed, then a race with another taker: retry
            if self._create():
                self.held = True
                return self
            holder = self._read()
            if holder is None:
                continue
            if not self._is_stale(holder):
                raise OutputDirLockedError(
                    f"{self.output_dir} is in use by another run: {_describe(holder)} "
                    f"(lock file {self.path}). Wait for it to finish or use another OUTPUT_DIR; if that run is "
                    "gone (e.g. it ran on another machine), delete the lock file."
                )
            logger.warning(f"Taking over the stale lock {self.path} of {_describe(holder)}: that process is gone")
            if self._read() == holder:  # still the same stale record, not a new holder's
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
        raise OutputDirLockedError(f"Could not lock {self.output_dir}: other runs keep re-creating {self.path}")

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        if self.held and (self._read() or {}).get("pid") == self.info["pid"]:
            os.remove(self.path)
        self.held = False

    def __enter__(self) -> "OutputDirLock":
        return self if self.held else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
