#!/usr/bin/env python
"""The table of ``protocol.md`` from the published runs' test-split evaluations:

    python projects/kd_benchmark/pretrained/analyze.py \
        --row "supervised 1x=projects/kd_benchmark/pretrained/results/1x/runs/student" \
        --row "supervised 3x=projects/kd_benchmark/pretrained/results/3x/runs/student" \
        --row "recommended 1x=projects/kd_benchmark/pretrained/results/1x/runs/<recommended>" ... \
        --teacher projects/kd_benchmark/pretrained/results/1x/runs/teacher \
        --reference-1x "supervised 1x" --reference-3x "supervised 3x" \
        --family "recommended 1x" "recommended 3x" "F* 1x" "R* 1x" \
        --out projects/kd_benchmark/pretrained/results/report

A row is ``NAME=DIR`` with ``DIR/seed<k>/eval_<dataset>.json`` per seed. Writes ``<out>.json`` and
``<out>.md``: per row bbox/segm AP mean ± std; paired differences (same seed) to both supervised
references with 95% t-intervals; the family's differences to supervised 3x with Holm's step-down
(interval at each step's level); gap closed with a bootstrap interval, against supervised 1x and, for
the family, against supervised 3x (the gap the longer-trained control leaves). ``--reference ROW=REF``
pairs a row with another supervised 1x row of its own regime (the from-scratch rows with the
from-scratch supervised student) for its 1x difference and gap closed.
"""
import argparse
import glob
import json
import os
import re
import sys
from dataclasses import asdict
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from protocol_stats import gap_closed, holm, mean_std, paired_difference  # noqa: E402

from dla_kd.utils.files import atomic_write_json, atomic_write_text  # noqa: E402

DATASET = "synthetic_doclaynet_test"


def seed_results(run_dir: str, dataset: str = DATASET, task: str = "bbox") -> Dict[int, float]:
    """``{seed: AP}`` of ``task`` from ``run_dir/seed<k>/eval_<dataset>.json``."""
    out = {}
    for path in glob.glob(os.path.join(run_dir, "seed*", f"eval_{dataset}.json")):
        seed = int(re.fullmatch(r"seed(-?\d+)", os.path.basename(os.path.dirname(path))).group(1))
        with open(path) as f:
            out[seed] = float(json.load(f)["results"][task]["AP"])
    if not out:
        raise FileNotFoundError(f"no {dataset} evaluation under {run_dir}/seed*/")
    return out


def teacher_ap(run_dir: str, dataset: str = DATASET, task: str = "bbox") -> float:
    path = os.path.join(run_dir, f"eval_{dataset}.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: the teacher's evaluation on {dataset} is missing")
    with open(path) as f:
        return float(json.load(f)["results"][task]["AP"])


def parse_rows(items: List[str]) -> List[Tuple[str, str]]:
    rows = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--row {item!r}: expected NAME=DIR")
        rows.append((name, path))
    return rows


def check_names(names: List[str], ref1: str, ref3: str, family: List[str], references: Dict[str, str]):
    """Every row the references and the family name is one of ``names``, else ValueError."""
    for needed in [ref1, ref3] + family + list(references) + list(references.values()):
        if needed not in names:
            raise ValueError(f"{needed!r} is not one of the rows {names}")


def analyze(rows: List[Tuple[str, str]], teacher_dir: str, ref1: str, ref3: str, family: List[str],
            dataset: str = DATASET, references: Dict[str, str] = None) -> dict:
    """``references``: row -> the supervised 1x row it is paired with (default ``ref1``)."""
    names = [n for n, _ in rows]
    references = references or {}
    check_names(names, ref1, ref3, family, references)
    ap = {task: {n: seed_results(d, dataset, task) for n, d in rows} for task in ("bbox", "segm")}
    teacher = {task: teacher_ap(teacher_dir, dataset, task) for task in ("bbox", "segm")}
    report = {"dataset": dataset, "teacher": teacher, "rows": []}
    for name in names:
        row = {"name": name}
        for task in ("bbox", "segm"):
            mean, std = mean_std(list(ap[task][name].values()))
            row[task] = {"mean": mean, "std": std, "seeds": sorted(ap[task][name])}
        own1 = references.get(name, ref1)
        if own1 != ref1:
            row["supervised_1x"] = own1
        for label, ref in (("vs_supervised_1x", own1), ("vs_supervised_3x", ref3)):
            if name != ref and len(set(ap["bbox"][name]) & set(ap["bbox"][ref])) >= 2:
                row[label] = asdict(paired_difference(ap["bbox"][name], ap["bbox"][ref]))
        if name not in (ref1, own1) and len(set(ap["bbox"][name]) & set(ap["bbox"][own1])) >= 2:
            row["gap_closed_vs_1x"] = gap_closed(ap["bbox"][name], ap["bbox"][own1], teacher["bbox"])
        if name in family and len(set(ap["bbox"][name]) & set(ap["bbox"][ref3])) >= 2:
            # the gap left by the longer-trained control: negative where the row stays below it
            row["gap_closed_vs_3x"] = gap_closed(ap["bbox"][name], ap["bbox"][ref3], teacher["bbox"])
        report["rows"].append(row)
    # rows naming one set of runs (the recommended recipe is F* or R* itself) are one hypothesis
    dirs, first_of, same_as = dict(rows), {}, {}
    for n in family:
        key = os.path.normpath(dirs[n])
        if key in first_of:
            same_as[n] = first_of[key]
        else:
            first_of[key] = n
    tested = holm({n: ap["bbox"][n] for n in family if n not in same_as}, ap["bbox"][ref3])
    report["holm_vs_supervised_3x"] = {
        n: {"difference": asdict(v["difference"]), "holm_alpha": v["holm_alpha"], "rejected": v["rejected"]}
        for n, v in tested.items()}
    report["same_runs_as"] = same_as
    return report


def _ci(d: dict) -> str:
    return f"{d['mean']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]"


def markdown(report: dict) -> str:
    t = report["teacher"]
    own = {r["name"]: r["supervised_1x"] for r in report["rows"] if "supervised_1x" in r}
    lines = [f"Test pages: `{report['dataset']}`. Teacher: {t['bbox']:.1f} bbox AP, {t['segm']:.1f} segm AP."
             + "".join(f" {n}: Δ and gap closed vs 1x against {ref}." for n, ref in own.items()), "",
             "| row | seeds | bbox AP | segm AP | Δ vs supervised 1x (95% CI) | Δ vs supervised 3x (95% CI) "
             "| gap closed (vs 1x) | gap closed (vs 3x) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def gap(g):
        return f"{g['mean']:.0%} [{g['low']:.0%}, {g['high']:.0%}]" if g else ""

    for r in report["rows"]:
        lines.append(
            f"| {r['name']} | {len(r['bbox']['seeds'])} | {r['bbox']['mean']:.1f} ± {r['bbox']['std']:.1f} | "
            f"{r['segm']['mean']:.1f} ± {r['segm']['std']:.1f} | "
            f"{_ci(r['vs_supervised_1x']) if 'vs_supervised_1x' in r else ''} | "
            f"{_ci(r['vs_supervised_3x']) if 'vs_supervised_3x' in r else ''} | "
            f"{gap(r.get('gap_closed_vs_1x'))} | {gap(r.get('gap_closed_vs_3x'))} |")
    lines += ["", "Holm's step-down, one-sided paired tests against supervised 3x (familywise 0.05):", "",
              "| row | Δ bbox AP [interval at the step's level] | level | rejected |", "|---|---:|---:|---|"]
    for name, h in sorted(report["holm_vs_supervised_3x"].items(), key=lambda kv: kv[1]["holm_alpha"]):
        d = h["difference"]
        lines.append(f"| {name} | {_ci(d)} | {d['level']:.4f} | {'yes' if h['rejected'] else 'no'} |")
    same = report.get("same_runs_as", {})
    if same:
        lines += ["", f"Tested once ({len(report['holm_vs_supervised_3x'])} hypotheses): "
                  + "; ".join(f"{n} are the runs of {m}" for n, m in same.items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--teacher", required=True, help="the teacher's published run folder")
    parser.add_argument("--reference-1x", required=True)
    parser.add_argument("--reference-3x", required=True)
    parser.add_argument("--family", nargs="+", required=True, help="rows tested against supervised 3x (Holm)")
    parser.add_argument("--reference", action="append", default=[], metavar="ROW=REF",
                        help="pair ROW with the supervised 1x row REF of its own regime (default: --reference-1x)")
    parser.add_argument("--dataset", default=DATASET)
    parser.add_argument("--out", required=True, help="<out>.json and <out>.md")
    args = parser.parse_args(argv)
    references = dict(parse_rows(args.reference))  # ROW=REF, parsed like a row
    report = analyze(parse_rows(args.row), args.teacher, args.reference_1x, args.reference_3x, args.family,
                     args.dataset, references)
    atomic_write_json(args.out + ".json", report, indent=1)
    atomic_write_text(args.out + ".md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
