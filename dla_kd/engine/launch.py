"""The ``--dist-url`` of a single-machine multi-process run: a free local port.

Detectron2's ``default_argument_parser`` defaults ``--dist-url`` to a fixed port per user
(``tcp://127.0.0.1:49152`` for root), so two runs started side by side (``tools/kd_report.py
--jobs N --num-gpus 2``) collide on it and the second fails or hangs. On one machine a free port
is picked instead, as Detectron2's ``launch`` does for ``--dist-url auto``.
"""
import socket


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
