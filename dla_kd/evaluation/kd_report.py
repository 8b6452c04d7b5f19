"""The KD comparison table: teacher, supervised student and distilled students evaluated on
the same split, with "gap closed" = (KD - student) / (teacher - student)."""
import json
import math
import os
from typing import Dict, List, Optional

from .results import per_category_ap

METRICS = ("AP", "AP50", "AP75")


def load_eval(output_dir: str, dataset: str) -> Optional[Dict]:
    """The ``eval_<dataset>.json`` a run wrote (see ``save_eval_results``), or None."""
    path = os.path.join(output_dir, f"eval_{dataset}.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)["results"]


def gap_closed(kd: Optional[float], student: Optional[float], teacher: Optional[float]) -> Optional[float]:
    """(KD - student) / (teacher - student); None when undefined (missing values, or a teacher
    that is not better than the student)."""
    if None in (kd, student, teacher) or not teacher > student:
        return None
    return (kd - student) / (teacher - student)


def build_rows(results: Dict[str, Dict], teacher: str = "teacher", student: str = "student") -> List[Dict]:
    """One row per run (insertion order): bbox/segm AP, AP50, AP75, per-class bbox AP, gap closed."""
    rows = []
    for name, res in results.items():
        row = {"run": name}
        for task in ("bbox", "segm"):
            for m in METRICS:
                row[f"{task}_{m}"] = res.get(task, {}).get(m)
        row["per_class_bbox_AP"] = per_category_ap(res.get("bbox", {}))
        row["per_class_segm_AP"] = per_category_ap(res.get("segm", {}))
        rows.append(row)
    by_name = {r["run"]: r for r in rows}
    for row in rows:
        for task in ("bbox", "segm"):
            key = f"{task}_AP"
            t = by_name.get(teacher, {}).get(key)
            s = by_name.get(student, {}).get(key)
            row[f"{task}_gap_closed"] = None if row["run"] in (teacher, student) else gap_closed(row[key], s, t)
    return rows


def _fmt(v, pct=False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{100 * v:+.0f}%" if pct else f"{v:.1f}"


def format_report(rows: List[Dict], title: str) -> str:
    """Markdown: main table, then per-class bbox AP."""
    head = ["run", "bbox AP", "AP50", "AP75", "segm AP", "AP50", "AP75", "gap closed (bbox)", "gap closed (segm)"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["run"]] + [_fmt(r[f"{t}_{m}"]) for t in ("bbox", "segm") for m in METRICS]
        cells += [_fmt(r["bbox_gap_closed"], pct=True), _fmt(r["segm_gap_closed"], pct=True)]
        lines.append("| " + " | ".join(cells) + " |")
    classes = list(rows[0]["per_class_bbox_AP"]) if rows else []
    if classes:
        lines += ["", "Per-class bbox AP:", "", "| run | " + " | ".join(classes) + " |", "|" + "---|" * (len(classes) + 1)]
        for r in rows:
            lines.append("| " + " | ".join([r["run"]] + [_fmt(r["per_class_bbox_AP"].get(c)) for c in classes]) + " |")
    return "\n".join(lines) + "\n"
