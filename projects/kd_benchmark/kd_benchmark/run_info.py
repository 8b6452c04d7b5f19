"""What a long report ran on and how long it took, across interrupted invocations."""
import contextlib
import functools
import hashlib
import json
import os
import tempfile
import threading
import time
from typing import Dict, Optional, Sequence, Union

try:
    import fcntl
except ImportError:  # Windows: invocations of one process are still serialised (_RECORD_LOCK)
    fcntl = None

from dla_kd.utils import files as utils_files

INVOCATIONS_FILE = "invocations.json"


_RECORD_LOCK = threading.Lock()  # the heartbeat thread and the report writer of one process
HEARTBEAT_S = 300.0  # how often a running invocation refreshes its record (keep_recording)


def _lock_path(output_dir: str) -> str:
    """The lock file of ``<output_dir>/invocations.json``: in the temporary folder, not beside it
    (the published folder is committed; ``invocations.json`` itself is replaced on every write)."""
    key = hashlib.sha1(os.path.realpath(output_dir).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"dla_kd-invocations-{key}.lock")


@contextlib.contextmanager
def _locked(dirs: Sequence[str]):
    """Hold ``_RECORD_LOCK`` and, where ``fcntl`` exists, an exclusive ``flock`` on the lock file
    of each folder (:func:`_lock_path`, taken in sorted order: two calls that share folders cannot
    deadlock), so that two invocations of this machine recording at once (two kd_report calls side
    by side) do not drop each other's record."""
    with _RECORD_LOCK, contextlib.ExitStack() as stack:
        if fcntl is not None:
            for path in sorted({_lock_path(d) for d in dirs}):
                fcntl.flock(stack.enter_context(open(path, "a")), fcntl.LOCK_EX)
        yield


def record_invocation(output_dirs: Union[str, Sequence[str]], started: float, final: bool = False) -> float:
    """Record this invocation (started at ``started``, still running unless ``final``) in
    ``<dir>/invocations.json`` of each of ``output_dirs`` and return the wall time of all
    invocations in seconds (time in which any of them ran). The files are merged first, so the
    published folder also counts the calls that did not publish but trained into the output
    folder. An invocation killed before its end keeps the time of its last record (refreshed every
    ``HEARTBEAT_S`` by :func:`keep_recording`)."""
    dirs = [output_dirs] if isinstance(output_dirs, str) else list(output_dirs)
    with _locked(dirs):
        merged = {}
        for output_dir in dirs:
            path = os.path.join(output_dir, INVOCATIONS_FILE)
            if os.path.isfile(path):
                with open(path) as f:
                    for e in json.load(f):
                        if e["start"] not in merged or e["end"] > merged[e["start"]]["end"]:
                            merged[e["start"]] = e
        mine = merged.get(started)
        if final or mine is None or not mine["finished"]:  # a late heartbeat leaves the final record
            merged[started] = {"start": started, "end": time.time(), "finished": final,
                               "load_average_1min": os.getloadavg()[0]}
            entries = sorted(merged.values(), key=lambda e: e["start"])
            for output_dir in dirs:
                os.makedirs(output_dir, exist_ok=True)
                utils_files.atomic_write_json(os.path.join(output_dir, INVOCATIONS_FILE), entries, unique=True, indent=2)
    return covered_seconds([(e["start"], e["end"]) for e in merged.values()])


def keep_recording(output_dirs: Union[str, Sequence[str]], started: float,
                   interval_s: Optional[float] = None) -> threading.Event:
    """Refresh this invocation's record (:func:`record_invocation`, not final) every
    ``interval_s`` seconds (default ``HEARTBEAT_S``) in a daemon thread until the returned event is set: a call killed while
    a long run trains (before any run of its list finished and recorded it) still counts the time
    it ran, up to one interval. Set the event before the final record."""
    stop = threading.Event()
    interval_s = HEARTBEAT_S if interval_s is None else interval_s

    def beat():
        while not stop.wait(interval_s):
            try:
                record_invocation(output_dirs, started)
            except OSError as e:  # a full disk must not kill the call it only times
                print(f"[run_info] could not record the invocation: {e}", flush=True)

    threading.Thread(target=beat, name="invocation-heartbeat", daemon=True).start()
    return stop


def covered_seconds(intervals) -> float:
    """Length of the union of (start, end) intervals: invocations that ran at the same time (e.g.
    a --collect-only call beside a training one) count once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def invocation_count(output_dir: str) -> int:
    path = os.path.join(output_dir, INVOCATIONS_FILE)
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        return len(json.load(f))


TEACHER_FILE = "teacher.json"


@functools.lru_cache(maxsize=8)
def file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file (cached by path, size and mtime)."""
    return utils_files.file_sha256(path)


def weights_sha256(path: str) -> str:
    """sha256 of a weights file, computed once per path, size and mtime (:func:`file_sha256`)."""
    st = os.stat(path)
    return file_sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns)


def write_teacher_record(output_dir: str, weights: str, teacher_results: Optional[Dict]) -> None:
    """``<output_dir>/teacher.json``: which teacher a distillation run learns from (weights file
    by its real path, its sha256, the teacher's bbox AP), so runs of different sessions (each may
    retrain the teacher on a fresh machine) can be told apart."""
    record = {
        "weights": os.path.realpath(weights),
        "sha256": weights_sha256(weights),
        "bbox_AP": (teacher_results or {}).get("bbox", {}).get("AP"),
    }
    os.makedirs(output_dir, exist_ok=True)
    # Atomic: kd_report's table reads the teacher folders while the teacher's thread publishes.
    utils_files.atomic_write_json(os.path.join(output_dir, TEACHER_FILE), record, indent=2)


def read_teacher_record(run_dirs) -> Optional[Dict]:
    """The first ``teacher.json`` found in ``run_dirs`` (None entries skipped)."""
    for d in run_dirs:
        if d and os.path.isfile(os.path.join(d, TEACHER_FILE)):
            with open(os.path.join(d, TEACHER_FILE)) as f:
                return json.load(f)
    return None
