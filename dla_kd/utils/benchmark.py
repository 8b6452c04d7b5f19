"""Timing, memory and the machine measured on, shared by the benchmarks (``tools/benchmark_*.py``
and the projects' studies)."""
import os
import platform
import resource
import statistics
import sys
import time
from typing import Callable, Dict, Optional

import torch


def time_calls(fn: Callable[[], object], warmup: int, iters: int) -> Dict[str, float]:
    """Run ``fn`` ``warmup`` times untimed, then ``iters`` times; seconds per call (median,
    mean, min, max). CUDA work is synchronised before each clock read."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "min_s": min(times),
        "max_s": max(times),
        "iters": iters,
    }


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _proc_status_mb(field: str) -> Optional[float]:
    """A memory field (``VmHWM``, ``VmRSS``) of /proc/self/status in MiB; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Start measuring the peak resident set size afresh (Linux: ``/proc/self/clear_refs``);
    False where the peak cannot be reset (then :func:`peak_rss_mb` is the process's peak)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_mb() -> Dict[str, float]:
    """This process's resident set size now and its peak since :func:`reset_peak_rss` (MiB)."""
    peak = _proc_status_mb("VmHWM")
    if peak is None:
        return {"peak_rss_mb": peak_memory_mb("cpu")["peak_rss_mb"]}
    return {"rss_mb": _proc_status_mb("VmRSS"), "peak_rss_mb": peak}


def peak_memory_mb(device: str) -> Dict[str, float]:
    """Peak memory of this process: CUDA allocator peak on GPU, max resident set size on CPU."""
    if device.startswith("cuda"):
        return {"peak_cuda_allocated_mb": torch.cuda.max_memory_allocated() / 2**20}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return {"peak_rss_mb": rss / (2**20 if sys.platform == "darwin" else 2**10)}


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
    """The CPU, torch version, thread split and load average of a measurement."""
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": threads,
        "jobs": jobs,
        "threads_per_job": max(1, threads // max(1, jobs)),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
