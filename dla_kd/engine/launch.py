"""Launching workers: the ``--dist-url`` of a single-machine multi-process run (a free local port),
and closing each worker's process group.

Detectron2's ``default_argument_parser`` defaults ``--dist-url`` to a fixed port per user
(``tcp://127.0.0.1:49152`` for root), so two runs started side by side (``projects/kd_benchmark/tools/kd_report.py
--jobs N --num-gpus 2``) collide on it and the second fails or hangs. On one machine a free port
is picked instead, as Detectron2's ``launch`` does for ``--dist-url auto``. And each worker closes
its process group before it exits (:func:`process_group_closed`).
"""
import contextlib
import socket

import torch.distributed as dist


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
