#!/usr/bin/env python
"""Accuracy-latency table of trained models: each model x test-time budget x backend (PyTorch,
TorchScript, ONNX fp32, ONNX int8): bbox AP on a validation set, median CPU latency per page with
1 and 2 threads (at the budget's test size and on an 800-px page), peak memory, file size, and for
the ONNX files onnxruntime's time per op type (with the int8 speedup it bounds); ``--backends ...
onnx-int8-7bit`` adds int8 with 7-bit weights (onnxruntime's reduce_range: on CPUs without VNNI
8-bit weights saturate and cost AP; its row and export are its own); then
the AP-vs-latency plot and the targets (student >= 3x the teacher's pages/s within 1 AP of its own
PyTorch AP; int8 >= 1.5x ONNX fp32 within 1 AP).

    python projects/deploy_benchmark/tools/benchmark_deploy.py --output projects/deploy_benchmark/results --dataset synthetic_doclaynet_val \\
        --model teacher=configs/synthetic/bench/teacher_R_50_GN.yaml:output/kd_benchmark/teacher/model_final.pth \\
        --model student=configs/synthetic/bench/student_MNv3_GN.yaml:output/kd_benchmark/student/seed42/model_final.pth \\
        --teacher teacher --budget accurate \\
        --budget lean=fast:MODEL.RPN.POST_NMS_TOPK_TEST=100,MODEL.ROI_HEADS.SCORE_THRESH_TEST=0.3

Models are given as NAME=CONFIG:WEIGHTS (a distillation config exports its student alone).
Budgets (see dla_kd/inference/budget.py) as a preset name, or LABEL=PRESET:KEY=VALUE,...
Writes deploy.json, deploy.md, deploy.png and rows/ (one JSON per measured row: a second call
resumes and only measures what is missing; --force measures again) to --output, the exported
files to --output/exports (not for committing). Measure on a quiet machine: nothing else running.
"""
import argparse
import logging
import os
import shlex
import sys
import time

import dla_kd  # noqa: F401  (registers datasets, backbones, meta-architectures)
from dla_kd.utils.benchmark import run_environment
from dla_kd.utils.cli import run_tool

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's package
from deploy_benchmark.benchmark import (  # noqa: E402
    BACKENDS,
    DEFAULT_BACKENDS,
    DeployModel,
    DeploySettings,
    NamedBudget,
    run_deploy_benchmark,
    write_deploy_report,
)

logger = logging.getLogger("dla_kd.benchmark_deploy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=CONFIG:WEIGHTS")
    parser.add_argument("--teacher", default="", help="the model the students are compared to (a --model NAME)")
    parser.add_argument("--budget", action="append", default=None, metavar="PRESET|LABEL=PRESET:KEY=VALUE,...",
                        help="test-time budgets (default: accurate and fast)")
    parser.add_argument("--dataset", required=True, help="registered validation set with annotations")
    parser.add_argument("--ap-images", type=int, default=100, help="validation pages for the AP")
    parser.add_argument("--backends", nargs="+", default=list(DEFAULT_BACKENDS), choices=BACKENDS,
                        help="default: %(default)s; onnx-int8-7bit: int8 with 7-bit weights (CPUs without VNNI)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--bar-threads", type=int, default=None, help="threads of the targets and plot (default: most)")
    parser.add_argument("--runs", type=int, default=10, help="timed calls per latency (median)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--calibration", default="", help="int8 calibration: dataset or folder (default --dataset)")
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--output", required=True)
    parser.add_argument("--force", action="store_true", help="measure every row again")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: the report of the rows measured so far (an interrupted run)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    models = [DeployModel.parse(m) for m in args.model]
    budgets = [NamedBudget.parse(b) for b in (args.budget or ["accurate", "fast"])]
    if args.teacher and args.teacher not in {m.name for m in models}:
        raise SystemExit(f"--teacher {args.teacher!r} is not one of the --model names {[m.name for m in models]}")
    settings = DeploySettings(args.dataset, args.ap_images, args.backends, args.threads, args.runs, args.warmup,
                              args.calibration, args.calibration_images)
    os.makedirs(args.output, exist_ok=True)
    load_before = [round(v, 2) for v in os.getloadavg()]
    if load_before[0] > 0.5:
        logger.warning(f"1-min load average {load_before[0]}: latencies are only comparable on a quiet machine")
    start = time.time()
    rows = run_deploy_benchmark(models, budgets, settings, args.output, force=args.force,
                                measure=not args.report_only)
    from dla_kd.export.quantize import cpu_int8_support  # onnxruntime: optional dependency

    meta = {**run_environment(max(args.threads), 1), "cpu_int8_flags": cpu_int8_support(), "threads": list(args.threads),
            "bar_threads": args.bar_threads or max(args.threads), "dataset": args.dataset,
            "ap_images": args.ap_images, "runs": args.runs, "warmup": args.warmup,
            "load_average_at_start": load_before, "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
            "wall_time_s_this_call": round(time.time() - start, 1),
            "command": "projects/deploy_benchmark/tools/benchmark_deploy.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))}
    paths = write_deploy_report(rows, args.output, meta, args.teacher)
    with open(paths["md"]) as f:
        print(f.read())
    print(f"written: {', '.join(paths.values())}")
    return 0


if __name__ == "__main__":
    run_tool(main)
