"""One run per output folder: a lock file that names its holder.

Two trainings in one ``OUTPUT_DIR`` would overwrite each other's checkpoints, ``last_checkpoint``,
logs and metrics and both exit 0. ``tools/train_net.py`` takes ``<OUTPUT_DIR>/train.lock``
(``--eval-only``: ``eval.lock``, see :func:`lock_name`) before anything is written there and
removes it at exit. The file is created atomically (``O_CREAT | O_EXCL``) and holds the holder's
PID, host, start time and command.

Every process of the run holds a shared ``flock`` on the lock file: the launcher from its
creation, each worker from :func:`join_run_lock` (``tools/train_net.py`` calls it before a worker
writes anything), and forked data-loader processes inherit it. So the lock stays taken while any
process of the run lives, even when the launcher was killed and its workers are still finishing
a step (they stop soon after: ``launch.stop_with_launcher``). A lock is stale only when

* nobody holds its ``flock`` (where the file system supports ``flock``; NFS may not), and
* its holder is gone: same host and the PID is not running, or the PID now belongs to another
  process (its start time, from ``/proc/<pid>/stat``, differs from the one recorded).

A stale lock is taken over with a warning. Any other existing lock stops the run with
:class:`OutputDirLockedError` naming the holder; a holder on another host cannot be checked from
here and is never taken over, with one exception: a SLURM job requeued onto another node
(``tools/submit_slurm.py``) finds the lock of its own earlier run, recorded with the same
``SLURM_JOB_ID`` and a smaller ``SLURM_RESTART_COUNT``; SLURM starts a requeued job only after the
earlier allocation has ended, so that lock is stale.
"""
import errno
import fcntl
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


LOCK_PATH_ENV = "DLA_KD_RUN_LOCK"  # set by the launcher for its workers: the lock they join


def process_start_time(pid: int) -> Optional[int]:
    """Start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), ``None`` where
    unknown (no such process, or no ``/proc``). A PID reused by a later process has another."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22; the command (field 2) is in parentheses and may contain spaces.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _flock(fd: int, operation: int) -> Optional[bool]:
    """``flock(fd, operation | LOCK_NB)``: True if granted, False if another process holds a
    conflicting lock, None if the file system cannot lock."""
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None


def _held_by_a_process(path: str) -> Optional[bool]:
    """Whether some process holds a ``flock`` on ``path`` (None: cannot tell)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        granted = _flock(fd, fcntl.LOCK_EX)
        return None if granted is None else not granted
    finally:
        os.close(fd)  # releases the probe's lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def slurm_incarnation() -> Dict:
    """``{"slurm_job_id", "slurm_restart_count"}`` of this process's SLURM job, ``{}`` outside SLURM."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return {}
    return {"slurm_job_id": job, "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT") or 0)}


def _earlier_run_of_this_slurm_job(holder: Dict) -> bool:
    """The holder is this SLURM job before a requeue (same job id, smaller restart count)."""
    mine = slurm_incarnation()
    return (bool(mine) and holder.get("slurm_job_id") == mine["slurm_job_id"]
            and isinstance(holder.get("slurm_restart_count"), int)
            and holder["slurm_restart_count"] < mine["slurm_restart_count"])


def _describe(holder: Dict) -> str:
    if not holder:
        return "an unknown holder (unreadable lock file)"
    return (
        f"PID {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
        + (f", workers {holder['workers']}" if holder.get("workers") else "")
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
            "pid_start": process_start_time(os.getpid()),
            "command": " ".join(sys.argv),
            **slurm_incarnation(),
        }
        self.held = False
        self._fd = None  # kept open while held: its shared flock says "a process of the run lives"

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            return False
        _flock(fd, fcntl.LOCK_SH)  # before the record is written: an empty young file is "being created"
        os.set_inheritable(fd, False)
        os.write(fd, json.dumps(self.info).encode())
        os.fsync(fd)
        self._fd = fd
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
        if _earlier_run_of_this_slurm_job(holder):
            return True  # SLURM ended that allocation before requeueing the job
        if holder.get("host") != self.info["host"]:
            return False  # another machine's PID cannot be checked from here
        if _held_by_a_process(self.path):
            return False  # the launcher or one of its workers still runs
        pid = holder.get("pid")
        if not isinstance(pid, int) or not _pid_alive(pid):
            return True
        recorded, now = holder.get("pid_start"), process_start_time(pid)
        return recorded is not None and now is not None and recorded != now  # the PID was reused

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
                pid = holder.get("pid")
                orphans = (
                    f" (PID {pid} has exited, but processes of its run, e.g. its workers, still hold the lock; "
                    "they stop on their own)"
                    if holder.get("host") == self.info["host"] and isinstance(pid, int) and not _pid_alive(pid)
                    else ""
                )
                raise OutputDirLockedError(
                    f"{self.output_dir} is in use by another run: {_describe(holder)}{orphans} "
                    f"(lock file {self.path}). Wait for it to finish or use another OUTPUT_DIR; if that run is "
                    "gone (e.g. it ran on another machine), delete the lock file."
                )
            logger.warning(f"Taking over the stale lock {self.path} of {_describe(holder)}: that run is gone")
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
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputDirLock":
        return self if self.held else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class RunLockLostError(RuntimeError):
    """A worker found its launcher's lock gone or taken by another run."""


_joined = []  # the worker's open lock file (kept open for the life of the process)


def join_run_lock(path: Optional[str] = None, launcher_pid: Optional[int] = None) -> Optional[str]:
    """In a worker process: hold a shared ``flock`` on the launcher's lock file (``path``, by
    default ``$DLA_KD_RUN_LOCK``) for the rest of this process's life, so that the lock does not
    look stale while this worker runs, even after its launcher died. Refuses
    (:class:`RunLockLostError`) when the file is gone or names another holder than
    ``launcher_pid`` (default: the parent process): another run owns the folder now. Returns the
    path joined, ``None`` when there is no lock to join."""
    path = path or os.environ.get(LOCK_PATH_ENV)
    if not path:
        return None
    launcher_pid = launcher_pid if launcher_pid is not None else os.getppid()
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise RunLockLostError(f"The lock {path} of this run is gone: another run may use the folder; stopping")
    _flock(fd, fcntl.LOCK_SH)
    with open(path) as f:
        try:
            holder = json.loads(f.read())
        except ValueError:
            holder = {}
    if not isinstance(holder, dict) or holder.get("pid") != launcher_pid:
        os.close(fd)
        raise RunLockLostError(
            f"The lock {path} names {_describe(holder if isinstance(holder, dict) else {})}, not this run's "
            f"launcher (PID {launcher_pid}): another run owns the folder now; stopping"
        )
    _joined.append(fd)
    return path
