"""What a long report ran on and how long it took, across interrupted invocations."""
import functools
import json
import os
import platform
import time
from typing import Dict, Optional, Sequence, Union

from ..utils import files as utils_files

INVOCATIONS_FILE = "invocations.json"


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_environment(threads: int, jobs: int) -> Dict:
    import torch

    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": threads,
        "jobs": jobs,
        "threads_per_job": max(1, threads // max(1, jobs)),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def record_invocation(output_dirs: Union[str, Sequence[str]], started: float, final: bool = False) -> float:
    """Record this invocation (started at ``started``, still running unless ``final``) in
    ``<dir>/invocations.json`` of each of ``output_dirs`` and return the wall time of all
    invocations in seconds (time in which any of them ran). The files are merged first, so the
    published folder also counts the calls that did not publish but trained into the output
    folder. An invocation killed before its end keeps the time of its last record."""
    dirs = [output_dirs] if isinstance(output_dirs, str) else list(output_dirs)
    merged = {}
    for output_dir in dirs:
        path = os.path.join(output_dir, INVOCATIONS_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                for e in json.load(f):
                    if e["start"] not in merged or e["end"] > merged[e["start"]]["end"]:
                        merged[e["start"]] = e
    merged[started] = {"start": started, "end": time.time(), "finished": final,
                       "load_average_1min": os.getloadavg()[0]}
    entries = sorted(merged.values(), key=lambda e: e["start"])
    for output_dir in dirs:
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, INVOCATIONS_FILE)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(entries, f, indent=2)
        os.replace(tmp, path)
    return covered_seconds([(e["start"], e["end"]) for e in entries])


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
    with open(os.path.join(output_dir, TEACHER_FILE), "w") as f:
        json.dump(record, f, indent=2)


def read_teacher_record(run_dirs) -> Optional[Dict]:
    """The first ``teacher.json`` found in ``run_dirs`` (None entries skipped)."""
    for d in run_dirs:
        if d and os.path.isfile(os.path.join(d, TEACHER_FILE)):
            with open(os.path.join(d, TEACHER_FILE)) as f:
                return json.load(f)
    return None
