"""Launching workers: the ``--dist-url`` of a single-machine multi-process run (a free local port),
and closing each worker's process group.

Detectron2's ``default_argument_parser`` defaults ``--dist-url`` to a fixed port per user
(``tcp://127.0.0.1:49152`` for root), so two runs started side by side (``projects/kd_benchmark/tools/kd_report.py
--jobs N --num-gpus 2``) collide on it and the second fails or hangs. On one machine a free port
is picked instead, as Detectron2's ``launch`` does for ``--dist-url auto``. And each worker closes
its process group before it exits (:func:`process_group_closed`), and stops when its launcher
dies (:func:`stop_with_launcher`).
"""
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Optional

import torch.distributed as dist

logger = logging.getLogger(__name__)

LAUNCHER_PID_ENV = "DLA_KD_LAUNCHER_PID"  # set by tools/train_net.py before it spawns workers
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resolve_dist_url(dist_url: str, num_machines: int, parser_default: str) -> str:
    """``dist_url`` for ``launch``: on one machine, ``auto`` and the parser's fixed default become
    ``tcp://127.0.0.1:<free port>``; an explicit URL, and any URL of a multi-machine run, is kept."""
    if num_machines == 1 and dist_url in ("auto", parser_default):
        return f"tcp://127.0.0.1:{free_port()}"
    return dist_url


@contextlib.contextmanager
def process_group_closed():
    """Run a launched worker's body, then close its process group the way torch asks for.

    Detectron2's ``launch`` leaves the group to be torn down at interpreter exit. With gloo that
    races: a worker thread still holding an ``AsyncWork`` (tensors with Python references) is
    destroyed during finalization and the process dies with ``terminate called without an active
    exception`` (SIGABRT) after a run that succeeded, so ``launch`` fails the whole run
    (pytorch/pytorch#190489). On success every rank waits for the others, then destroys the group
    while the interpreter is alive. On an exception nothing is torn down: a barrier or a
    destroy with a collective pending on a dead peer would hang instead of reporting the error.
    """
    yield
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def launcher_pid() -> Optional[int]:
    """PID of the ``tools/train_net.py`` process that spawned this one, ``None`` if this process
    is the launcher itself (one process per machine) or was not started by it."""
    pid = os.environ.get(LAUNCHER_PID_ENV)
    if not pid or int(pid) == os.getpid():
        return None
    return int(pid)


def stop_with_launcher(parent_pid: int, poll_s: float = 1.0, sig: int = signal.SIGTERM) -> None:
    """Make this worker stop when its launcher ``parent_pid`` dies.

    Detectron2's ``launch`` spawns one worker per GPU; when the launcher is killed (SIGKILL, an
    OOM kill) the workers are orphaned and go on training and saving into the folder whose lock
    now looks stale, beside the next run that takes it over. Here the kernel sends ``sig`` to this
    process when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``), and a daemon thread polling
    the parent PID every ``poll_s`` seconds does the same where ``prctl`` is not available (and
    covers a launcher that died before this call). Saves are atomic, so a worker stopped mid-save
    leaves the previous checkpoint (its temporary file is removed at the next start).
    """
    if os.getppid() != parent_pid:  # the launcher died before we got here
        _stop(parent_pid, sig)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
                logger.warning(f"prctl(PR_SET_PDEATHSIG) failed (errno {ctypes.get_errno()}): polling the launcher")
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent_pid:  # died between the check and prctl
            _stop(parent_pid, sig)

    def watch():
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:
                _stop(parent_pid, sig)

    threading.Thread(target=watch, name="launcher-watchdog", daemon=True).start()


def _stop(parent_pid: int, sig: int) -> None:
    print(f"Launcher (PID {parent_pid}) is gone: worker {os.getpid()} stops", file=sys.stderr, flush=True)
    os.kill(os.getpid(), sig)
    time.sleep(10)  # a handler may have caught the signal
    os._exit(1)
