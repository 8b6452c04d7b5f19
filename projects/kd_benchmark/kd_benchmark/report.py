"""The KD comparison table: teacher, supervised student and distilled students evaluated on
the same split, each trained with several seeds: mean and standard deviation over seeds of each
run's COCO metrics, "gap closed" = (KD - student) / (teacher - student) on the means, and the
distance to the supervised student in units of its seed standard deviation.

A *run* is a config (teacher, supervised student, one distillation recipe); ``results`` below maps
a run name to the list of its per-seed evaluation results as written by ``save_eval_results``
(``{"bbox": {"AP": ..., "AP-<class>": ...}, "segm": {...}}``).
"""
import json
import math
import os
import statistics
from typing import Dict, List, Optional, Sequence

from dla_kd.evaluation.results import per_category_ap

METRICS = ("AP", "AP50", "AP75")


def load_eval(output_dir: str, dataset: str, final_iteration: Optional[int] = None) -> Optional[Dict]:
    """The ``eval_<dataset>.json`` a run wrote (see ``save_eval_results``), or None. With
    ``final_iteration`` only an evaluation at that iteration counts: periodic evaluations during
    training (``TEST.EVAL_PERIOD``) write the same file at earlier iterations."""
    path = os.path.join(output_dir, f"eval_{dataset}.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        payload = json.load(f)
    if final_iteration is not None and payload.get("iteration") != final_iteration:
        return None
    return payload["results"]


def gap_closed(kd: Optional[float], student: Optional[float], teacher: Optional[float]) -> Optional[float]:
    """(KD - student) / (teacher - student); None when undefined (missing values, or a teacher
    that is not better than the student)."""
    if None in (kd, student, teacher) or not teacher > student:
        return None
    return (kd - student) / (teacher - student)

TASKS = ("bbox", "segm")


def mean_std(values: Sequence[Optional[float]]) -> Dict[str, Optional[float]]:
    """Mean and sample standard deviation (n - 1) of the finite values; std is None for n < 2."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(vals) if len(vals) > 1 else None
    return {"mean": statistics.fmean(vals), "std": std, "n": len(vals)}


def aggregate_run(per_seed: List[Dict]) -> Dict:
    """One run's metrics over seeds: ``{"bbox_AP": {"mean", "std", "n", "values"}, ...}`` and the
    per-class bbox AP means."""
    out = {}
    for task in TASKS:
        for m in METRICS:
            values = [r.get(task, {}).get(m) for r in per_seed]
            out[f"{task}_{m}"] = {**mean_std(values), "values": values}
    classes = list(per_category_ap(per_seed[0].get("bbox", {}))) if per_seed else []
    out["per_class_bbox_AP"] = {
        c: mean_std([per_category_ap(r.get("bbox", {})).get(c) for r in per_seed])["mean"] for c in classes
    }
    return out


def build_seed_rows(
    results: Dict[str, List[Dict]], teacher: str = "teacher", student: str = "student",
    seeds: Optional[Dict[str, List[int]]] = None,
) -> List[Dict]:
    """One row per run (insertion order) with mean/std per metric, gap closed on the means, and
    ``{task}_delta_in_student_std`` = (run mean - student mean) / student std.

    ``seeds``: run -> the seed of each of its results (same order). With it every KD row also gets
    ``{task}_paired_delta``: mean ± std of (run AP - supervised student AP) over the seeds both
    have, ``{"mean", "std", "n", "values", "seeds"}``. A distillation run and the supervised run of
    the same seed start from the same student and see the same pages in the same order (the KD
    RNG is forked), so the per-seed difference is the KD loss's doing, without the seed's own
    luck that the unpaired std carries."""
    rows = [{"run": name, "seeds": len(per_seed), **aggregate_run(per_seed)} for name, per_seed in results.items()]
    by_name = {r["run"]: r for r in rows}
    if seeds:
        _add_paired_deltas(rows, results, seeds, teacher, student)
    for row in rows:
        for task in TASKS:
            key = f"{task}_AP"
            t = by_name.get(teacher, {}).get(key, {}).get("mean")
            s = by_name.get(student, {}).get(key, {})
            own = row[key]["mean"]
            special = row["run"] in (teacher, student)
            row[f"{task}_gap_closed"] = None if special else gap_closed(own, s.get("mean"), t)
            s_std = s.get("std")
            row[f"{task}_delta_in_student_std"] = (
                None if special or None in (own, s.get("mean")) or not s_std else (own - s["mean"]) / s_std
            )
    return rows


def _add_paired_deltas(rows: List[Dict], results: Dict[str, List[Dict]], seeds: Dict[str, List[int]],
                       teacher: str, student: str) -> None:
    """``{task}_paired_delta`` of every row but the teacher's and the student's (see
    :func:`build_seed_rows`)."""
    plain = dict(zip(seeds.get(student, []), results.get(student, [])))
    for row in rows:
        if row["run"] in (teacher, student):
            continue
        common = [(s, r) for s, r in zip(seeds.get(row["run"], []), results[row["run"]]) if s in plain]
        for task in TASKS:
            pairs = [(s, r.get(task, {}).get("AP"), plain[s].get(task, {}).get("AP")) for s, r in common]
            pairs = [(s, kd - sup) for s, kd, sup in pairs if kd is not None and sup is not None]
            row[f"{task}_paired_delta"] = {**mean_std([d for _, d in pairs]), "values": [d for _, d in pairs],
                                           "seeds": [s for s, _ in pairs]}


def runs_to_draw(rows: List[Dict], sizes: Dict[str, Dict], count: int,
                 teacher: str = "teacher", student: str = "student") -> List[str]:
    """Names of the KD runs whose learning curves are drawn beside the teacher's and the student's,
    best mean bbox AP first: the ``count`` best among the rows whose deployable model costs what
    the student's does (``sizes``: run -> {"params_M", "gflops"}), the comparison at equal cost;
    then the best row of any cost when it is not among them (e.g. SimKD, which deploys the
    teacher's heads), so the table's best row always has its curve. A run whose size, or the
    student's, is unknown counts as the student's size (it is not hidden)."""
    kd = sorted((r for r in rows if r["run"] not in (teacher, student) and r["bbox_AP"]["mean"] is not None),
                key=lambda r: -r["bbox_AP"]["mean"])
    names = [r["run"] for r in kd if deploys_as_student(sizes, r["run"], student)][:count]
    if count > 0 and kd and kd[0]["run"] not in names:
        names.append(kd[0]["run"])
    return names


def deploys_as_student(sizes: Dict[str, Dict], name: str, student: str = "student") -> bool:
    """Whether run ``name``'s deployable model has the student's parameters and GFLOPs
    (``sizes``: run -> {"params_M", "gflops"}); True when either size is unknown."""
    size, plain = sizes.get(name), sizes.get(student)
    if not size or not plain:
        return True
    return all(math.isclose(size.get(k) or 0.0, plain.get(k) or 0.0, rel_tol=1e-6) for k in ("params_M", "gflops"))


def add_own_teacher_gap(rows: List[Dict], teacher_results: Dict[str, List[Dict]], student: str = "student") -> None:
    """Gap closed against the teacher(s) a row's runs learned from rather than the table's teacher
    (a teacher retrained on a later machine scores otherwise, and a row may mix both).
    ``teacher_results``: run name -> the results of the teacher of each of its finished seeds.
    Adds ``{task}_own_teacher_AP`` (mean over the seeds' teachers) and
    ``{task}_gap_closed_own_teacher`` = (KD - student) / (own teacher - student) on the means."""
    s_row = next((r for r in rows if r["run"] == student), None)
    for row in rows:
        per_seed = teacher_results.get(row["run"])
        if not per_seed:
            continue
        for task in TASKS:
            t = mean_std([r.get(task, {}).get("AP") for r in per_seed])["mean"]
            s = s_row[f"{task}_AP"]["mean"] if s_row else None
            row[f"{task}_own_teacher_AP"] = t
            row[f"{task}_gap_closed_own_teacher"] = gap_closed(row[f"{task}_AP"]["mean"], s, t)


def _own_teacher_differs(row: Dict) -> bool:
    own = row.get("bbox_gap_closed_own_teacher")
    return own is not None and (row["bbox_gap_closed"] is None or abs(own - row["bbox_gap_closed"]) > 1e-9)


def _fmt_ms(stat: Optional[Dict], signed: bool = False) -> str:
    """``30.1 ± 0.6`` (mean ± std, ``+9.3 ± 0.6`` when ``signed``: a difference); "-" when unknown."""
    if not stat or stat.get("mean") is None:
        return "-"
    mean = format(stat["mean"], "+.1f" if signed else ".1f")
    return mean if stat.get("std") is None else f"{mean} ± {stat['std']:.1f}"


def format_number(v, spec: str) -> str:
    """``v`` formatted with ``spec`` as the tables print it; "-" when unknown (None, nan, inf)."""
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:+.0f}%"


def format_seed_report(rows: List[Dict], sizes: Optional[Dict[str, Dict]] = None) -> str:
    """Markdown: main table (mean ± std over seeds), then per-class bbox AP means.
    ``sizes``: run -> {"params_M", "gflops"} of the deployable model. When a row learned (in part)
    from another teacher than the table's (see :func:`add_own_teacher_gap`), a column gives its
    bbox gap closed against its own teacher(s)."""
    sizes = sizes or {}
    own_teacher = any(_own_teacher_differs(r) for r in rows)
    paired = any("bbox_paired_delta" in r for r in rows)
    head = ["run", "seeds", "bbox AP", "AP50", "AP75", "segm AP", "AP50", "AP75",
            "gap closed (bbox)", "gap closed (segm)"] + (["gap closed (bbox, own teacher)"] if own_teacher else []) + [
            "Δ bbox / student std"] + (["paired Δ bbox (same seed)"] if paired else []) + ["params (M)", "GFLOPs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        size = sizes.get(r["run"], {})
        cells = [r["run"], str(r["seeds"])] + [_fmt_ms(r[f"{t}_{m}"]) for t in TASKS for m in METRICS]
        cells += [_pct(r["bbox_gap_closed"]), _pct(r["segm_gap_closed"])]
        if own_teacher:
            cells.append(_pct(r.get("bbox_gap_closed_own_teacher")))  # "-" for the teacher and the student
        cells.append(format_number(r["bbox_delta_in_student_std"], "+.1f"))
        if paired:
            cells.append(_fmt_ms(r.get("bbox_paired_delta"), signed=True))  # "-" for the teacher and the student
        cells += [format_number(size.get("params_M"), ".2f"), format_number(size.get("gflops"), ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    if own_teacher:
        lines += ["", "Gap closed (bbox, own teacher): against the mean bbox AP of the teachers the row's runs learned "
                  "from (listed below), not the table's teacher."]
    if paired:
        lines += ["", "Paired Δ bbox (same seed): mean ± std over seeds of (run bbox AP - supervised student's bbox AP "
                  "with the same seed); both start from the same student and see the same pages in the same order, "
                  "so the seed's own luck cancels."]
    classes = list(rows[0]["per_class_bbox_AP"]) if rows else []
    if classes:
        lines += ["", "Per-class bbox AP (mean over seeds):", "",
                  "| run | " + " | ".join(classes) + " |", "|" + "---|" * (len(classes) + 1)]
        for r in rows:
            per_class = [format_number(r["per_class_bbox_AP"].get(c), ".1f") for c in classes]
            lines.append("| " + " | ".join([r["run"]] + per_class) + " |")
    return "\n".join(lines) + "\n"


def configured_kd_weights(cfg) -> Optional[Dict]:
    """``{"balanced": DISTILL.BALANCE.ENABLED, "configured": {loss: DISTILL.<LOSS>.WEIGHT}}`` of a
    distillation config (the recipe's weights: the published ones unless it sets its own); None for
    a plain model."""
    if cfg.MODEL.META_ARCHITECTURE != "DistillGeneralizedRCNN":
        return None
    return {"balanced": bool(cfg.DISTILL.BALANCE.ENABLED),
            "configured": {loss: float(getattr(cfg.DISTILL, loss.upper()).WEIGHT) for loss in cfg.DISTILL.LOSSES}}


def format_kd_weights(kd_weights: Dict[str, Dict], seeds: Sequence[int]) -> str:
    """Markdown table of each distillation row's KD weights: configured, and the one each seed
    trained with at its last iteration (``kd_weights[run]["trained"][str(seed)][loss]``; with
    DISTILL.BALANCE the calibrated weight, each seed its own)."""
    head = ["run", "loss", "configured", "balanced"] + [f"seed {s}" for s in seeds]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run, w in kd_weights.items():
        for loss, configured in w["configured"].items():
            trained = [w["trained"].get(str(s), {}).get(loss) for s in seeds]
            lines.append("| " + " | ".join([run, loss, format(configured, ".4g"), "yes" if w["balanced"] else "no"]
                                           + [format_number(t, ".4g") for t in trained]) + " |")
    return "\n".join(lines) + "\n"


def report_markdown(report: Dict, curves_file: str) -> str:
    """``report.md`` from the content of ``report.json`` (``curves_file``: the curves' file name):
    the table, convergence, KD weights, teachers, runs taken over, command and hardware."""
    env, seeds = report["environment"], report["seeds"]
    md = [f"### KD benchmark on {report['dataset']} (seeds {', '.join(map(str, seeds))})", "",
          format_seed_report(report["rows"], report["sizes"])]
    if report["curves"]:
        convergence = report["plateau_change_last_third"]
        md += [f"Learning curves (bbox AP during training, mean over seeds; the best KD runs at the student's "
               f"deployable size, and the best of any size): `{curves_file}`. Largest change "
               "of bbox AP over the last third of the schedule: "
               + ", ".join(f"{k} {'still training' if v != v else f'{v:.2f}'}" for k, v in convergence.items())
               + ".", ""]
    if report.get("kd_weights"):  # reports written before KD weights were recorded have none
        md += ["KD weights: configured (the recipe's, the published weight unless it sets its own) and the one "
               "each seed trained with at its last iteration (`kd_weight/<loss>` in its metrics.json; with "
               "DISTILL.BALANCE the weight it calibrated, each seed its own):", "",
               format_kd_weights(report["kd_weights"], seeds)]
    teachers = report["teachers"]
    if teachers:
        # With several teachers (one retrained on a later machine), the runs of all but the one
        # most runs learned from are named: their rows mix teachers.
        most = max(teachers, key=lambda t: t["runs"])
        md += ["Teacher(s) the distillation runs learned from (sha256 of the weights: bbox AP, runs): "
               + "; ".join(f"`{t['sha256'][:12]}`: {format_number(t['bbox_AP'], '.1f')}, {t['runs']} run(s)"
                           + ("" if t is most else f" ({', '.join(t['run_ids'])})") for t in teachers) + ".", ""]
    if report["reused_runs"]:
        md += ["Runs taken over from another report (trained the same way; evaluated here on the datasets they "
               "were not): " + ", ".join(f"{k} <- `{v}`" for k, v in sorted(report["reused_runs"].items())) + ".", ""]
    md += [f"Command: `{env['command']}`", "",
           f"Hardware: {env['cpu']} ({env['cpu_count']} cores), torch {env['torch']}, {env['jobs']} job(s) "
           f"side by side with {env['threads_per_job']} thread(s) each; wall time so far "
           f"{env['wall_time_h']:.2f} h over {env['invocations']} invocation(s); load average "
           f"{env['load_average']}.", ""]
    if report["failed_or_missing"]:
        md.append("Failed or missing runs (see <output>/<run>/seed<k>/kd_report_stdout.log): "
                  f"{', '.join(report['failed_or_missing'])}\n")
    return "\n".join(md)
