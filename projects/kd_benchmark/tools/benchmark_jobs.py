#!/usr/bin/env python
"""Is it faster to train several runs side by side with one thread each, or one after the other
with all threads? Times both on the same config and writes ``jobs.{json,md}``.

    python projects/kd_benchmark/tools/benchmark_jobs.py --config-file projects/kd_benchmark/configs/fitnet.yaml \\
        --iters 60 --jobs 2 --threads 2 --output output/benchmarks/jobs [KEY VALUE ...]

Side by side: ``--jobs`` training processes at once, ``--threads / --jobs`` threads each.
Sequential: the same ``--jobs`` trainings one after the other, ``--threads`` threads each. Each
training runs ``--iters`` iterations (no evaluation) in a fresh process through
``tools/train_net.py``; the total wall time of each mode is what a multi-run report pays. Measure
on a quiet machine: anything else running changes the answer.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

from dla_kd.utils.files import atomic_write_json, atomic_write_text

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")


def _command(config: str, iters: int, out: str, opts):
    return [sys.executable, TRAIN_NET, "--config-file", config, *opts, "SOLVER.MAX_ITER", str(iters),
            "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()", "SOLVER.CHECKPOINT_PERIOD", str(10 ** 9),
            "OUTPUT_DIR", out]


def _launch(cmd, threads: int, log: str):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)


def _wait(procs, logs):
    for proc, log in zip(procs, logs):
        if proc.wait() != 0:
            raise SystemExit(f"a training failed (exit {proc.returncode}), see {log}")


def time_mode(config, iters, jobs, threads, side_by_side: bool, workdir: str, opts) -> float:
    """Wall seconds of ``jobs`` trainings, side by side (threads/jobs each) or sequential."""
    mode = "side_by_side" if side_by_side else "sequential"
    outs = [os.path.join(workdir, f"{mode}_{k}") for k in range(jobs)]
    logs = [f"{o}.log" for o in outs]
    start = time.perf_counter()
    if side_by_side:
        per_job = max(1, threads // jobs)
        _wait([_launch(_command(config, iters, o, opts), per_job, log) for o, log in zip(outs, logs)], logs)
    else:
        for o, log in zip(outs, logs):
            _wait([_launch(_command(config, iters, o, opts), threads, log)], [log])
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--output", required=True)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as workdir:
        side = time_mode(args.config_file, args.iters, args.jobs, args.threads, True, workdir, args.opts)
        seq = time_mode(args.config_file, args.iters, args.jobs, args.threads, False, workdir, args.opts)
    result = {
        "config": args.config_file, "iters": args.iters, "jobs": args.jobs, "threads": args.threads,
        "side_by_side_s": side, "sequential_s": seq, "sequential_over_side_by_side": seq / side,
        "faster": "side_by_side" if side < seq else "sequential",
        "load_average_1min_before": load_before, "cpu_count": os.cpu_count(),
    }
    os.makedirs(args.output, exist_ok=True)
    atomic_write_json(os.path.join(args.output, "jobs.json"), result, indent=2)
    md = (
        f"| mode | wall time for {args.jobs} x {args.iters} iterations (s) |\n|---|---:|\n"
        f"| {args.jobs} side by side, {max(1, args.threads // args.jobs)} thread(s) each | {side:.1f} |\n"
        f"| one after the other, {args.threads} threads | {seq:.1f} |\n\n"
        f"Faster: {result['faster']} ({seq / side:.2f}x). Load average before: {load_before:.2f} on "
        f"{os.cpu_count()} cores.\n"
    )
    atomic_write_text(os.path.join(args.output, "jobs.md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
