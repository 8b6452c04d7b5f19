#!/usr/bin/env python
"""Run (or collect) a KD comparison: teacher, supervised student and each distillation config on
the same schedule and seed, then one table (Markdown + JSON) with bbox/segm AP, AP50, AP75,
per-class AP and "gap closed" = (KD - student) / (teacher - student).

    python tools/kd_report.py --teacher configs/synthetic/kd/teacher_R_50_GN.yaml \\
        --student configs/synthetic/kd/student_R_18_GN.yaml \\
        --distill configs/synthetic/distill/*.yaml --output output/kd_report/synthetic_doclaynet \\
        [--teacher-weights W] [--seed 42] [--collect-only] [KEY VALUE ...]

Each run trains with tools/train_net.py into ``<output>/<name>``; a finished run (its eval file
exists) is not repeated, an interrupted one resumes from its last checkpoint. KEY VALUE overrides
apply to the student and every distillation run (same schedule); ``--teacher-opts`` to the
teacher. Distillation runs get DISTILL.TEACHER.CONFIG/WEIGHTS pointed at this teacher.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import dla_kd  # noqa: F401
from dla_kd.engine import load_config
from dla_kd.evaluation.kd_report import build_rows, format_report, load_eval

TRAIN_NET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_net.py")


def run_name(config_file: str) -> str:
    return os.path.splitext(os.path.basename(config_file))[0]


def run(config_file, output_dir, opts, dataset, num_gpus, eval_only=False, threads=None):
    """Train + evaluate (or only evaluate) one config unless already done; returns its results.
    ``threads``: torch threads of the run (OMP_NUM_THREADS), default: inherited."""
    done = load_eval(output_dir, dataset)
    if done is not None:
        print(f"[kd_report] {output_dir}: done, collected")
        return done
    resume = not eval_only and os.path.isfile(os.path.join(output_dir, "last_checkpoint"))
    cmd = [sys.executable, TRAIN_NET, "--config-file", config_file, "--num-gpus", str(num_gpus)]
    cmd += ["--resume"] if resume else []
    cmd += ["--eval-only"] if eval_only else []
    cmd += [*opts, "OUTPUT_DIR", output_dir]
    print(f"[kd_report] {'resuming' if resume else 'training'} {output_dir}:\n  {' '.join(cmd)}", flush=True)
    start = time.time()
    os.makedirs(output_dir, exist_ok=True)
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    log_path = os.path.join(output_dir, "kd_report_stdout.log")
    with open(log_path, "a") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        print(f"[kd_report] {output_dir}: FAILED (exit code {proc.returncode}), see {log_path}", flush=True)
        return None
    print(f"[kd_report] {output_dir}: finished in {(time.time() - start) / 60:.1f} min", flush=True)
    return load_eval(output_dir, dataset)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="teacher config")
    parser.add_argument("--teacher-weights", default="", help="trained teacher; else it is trained here")
    parser.add_argument("--teacher-opts", nargs="*", default=[], help="KEY VALUE overrides for the teacher")
    parser.add_argument("--student", required=True, help="supervised student config")
    parser.add_argument("--distill", nargs="+", required=True, help="distillation configs")
    parser.add_argument("--output", required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--num-gpus", type=int, default=1)
    parser.add_argument("--collect-only", action="store_true", help="only tabulate finished runs")
    parser.add_argument("--jobs", type=int, default=1,
                        help="student/KD runs trained side by side after the teacher (CPU: one torch thread each)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads to share between jobs")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for student and KD runs")
    args = parser.parse_args()

    seed = ["SEED", str(args.seed)]
    dataset = load_config(args.student, args.opts).DATASETS.TEST[0]
    plan = [("teacher", args.teacher, seed + list(args.teacher_opts)), ("student", args.student, seed + args.opts)]
    teacher_weights = args.teacher_weights or os.path.join(args.output, "teacher", "model_final.pth")
    for config in args.distill:
        kd_opts = ["DISTILL.TEACHER.CONFIG", args.teacher, "DISTILL.TEACHER.WEIGHTS", teacher_weights]
        plan.append((run_name(config), config, seed + args.opts + kd_opts))

    def execute(item):
        name, config, opts = item
        out = os.path.join(args.output, name)
        eval_only = name == "teacher" and bool(args.teacher_weights)
        if eval_only:
            opts = opts + ["MODEL.WEIGHTS", args.teacher_weights]
        if args.collect_only:
            return name, load_eval(out, dataset)
        threads = args.threads if name == "teacher" else max(1, args.threads // args.jobs)
        return name, run(config, out, opts, dataset, args.num_gpus, eval_only, threads)

    # The teacher first (every distillation run needs it), then the rest in parallel.
    results = dict([execute(plan[0])])
    _write(args, results, dataset)
    if results["teacher"] is None and not args.collect_only:
        raise SystemExit("[kd_report] the teacher run failed; nothing to distill from")
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for name, res in pool.map(execute, plan[1:]):
            results[name] = res
            _write(args, results, dataset)


def _write(args, results, dataset):
    rows = build_rows({k: v for k, v in results.items() if v is not None})
    missing = [k for k, v in results.items() if v is None]
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "report.json"), "w") as f:
        json.dump({"dataset": dataset, "seed": args.seed, "opts": args.opts, "rows": rows, "failed_or_missing": missing},
                  f, indent=2)
    md = format_report(rows, f"KD report on {dataset} (seed {args.seed})")
    if missing:
        md += f"\nFailed or missing runs (see <output>/<run>/kd_report_stdout.log): {', '.join(missing)}\n"
    with open(os.path.join(args.output, "report.md"), "w") as f:
        f.write(md)
    print(md, flush=True)


if __name__ == "__main__":
    main()
