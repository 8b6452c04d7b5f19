#!/usr/bin/env python
"""Does the teacher a run learned from explain its AP? For a KD benchmark whose runs learned from
several trainings of one teacher config (each fresh machine retrains it):

    python projects/kd_benchmark/tools/kd_teacher_effect.py --published projects/kd_benchmark/results \\
        --reference b7ab74b97654 --output projects/kd_benchmark/results/analysis/teacher_effect

Fits AP = recipe + seed + teacher by least squares over the published distillation runs
(``<published>/runs/<recipe>/seed<k>/``, each with its ``teacher.json``) for bbox and segm AP
(``kd_benchmark/teacher_effect.py``) and writes ``teacher_effect.json`` and
``teacher_effect.md`` to ``--output``.
"""
import argparse
import os
import sys

from dla_kd.utils.cli import run_tool
from dla_kd.utils.files import atomic_write_json, atomic_write_text

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's package
from kd_benchmark.teacher_effect import fit_teacher_effects, published_distillation_runs, teacher_effect_markdown  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--published", required=True, help="a kd_report --publish folder (with runs/)")
    parser.add_argument("--dataset", default="synthetic_doclaynet_val", help="the evaluation to fit")
    parser.add_argument("--reference", help="sha256 (or prefix) of the teacher whose effect is 0 "
                                            "(default: the one most runs learned from)")
    parser.add_argument("--output", required=True, help="output folder")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    runs_dir = os.path.join(args.published, "runs")
    if not os.path.isdir(runs_dir):
        raise FileNotFoundError(f"{runs_dir} does not exist: --published must be a kd_report --publish folder")
    report, text = {"published": args.published, "dataset": args.dataset}, []
    for task in ("bbox", "segm"):
        runs = published_distillation_runs(runs_dir, args.dataset, task)
        if not runs:
            raise ValueError(f"no distillation run under {runs_dir} has a teacher.json and eval_{args.dataset}.json")
        report[task] = {"fit": fit_teacher_effects(runs, args.reference), "runs": runs}
        text.append(teacher_effect_markdown(report[task]["fit"], task, args.dataset))
    os.makedirs(args.output, exist_ok=True)
    atomic_write_json(os.path.join(args.output, "teacher_effect.json"), report, indent=2)
    atomic_write_text(os.path.join(args.output, "teacher_effect.md"), "\n".join(text))
    print("\n".join(text))
    print(f"written: {args.output}/teacher_effect.{{json,md}}")
    return 0


if __name__ == "__main__":
    run_tool(main)
