"""Writing COCO evaluation results to the output folder and printing them as tables."""
import math
import os
from typing import Dict, List, Mapping, Optional

from ..utils.files import atomic_write_json

SUMMARY_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _json_safe(value):
    """NaN (e.g. AP of a class without ground truth) becomes ``null``: strict JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def save_eval_results(results: Mapping, output_dir: str, dataset_name: str, *, suffix: str = "", **info) -> str:
    """Write one dataset's results (``{"bbox": {"AP": ..., "AP-<class>": ...}, "segm": ...}``)
    to ``<output_dir>/eval_<dataset_name><suffix>.json`` together with ``info`` (iteration,
    weights...). Returns the file path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, f"eval_{dataset_name}{suffix}.json")
    payload = {"dataset": dataset_name, **info, "results": _json_safe(dict(results))}
    atomic_write_json(path, payload, indent=2)
    return path


def per_category_ap(task_results: Mapping[str, float]) -> Dict[str, Optional[float]]:
    """``{"AP-text": 91.2, ...}`` -> ``{"text": 91.2, ...}``."""
    return {k[3:]: v for k, v in task_results.items() if k.startswith("AP-")}


def format_results_table(results: Mapping, tasks: List[str] = ("bbox", "segm")) -> str:
    """Markdown table: one row per task, summary metrics then per-category AP."""
    tasks = [t for t in tasks if t in results]
    if not tasks:
        return "(no bbox/segm results)"
    categories = list(per_category_ap(results[tasks[0]]))
    header = ["task", *SUMMARY_METRICS, *categories]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task in tasks:
        r = results[task]
        values = [r.get(m) for m in SUMMARY_METRICS] + [r.get(f"AP-{c}") for c in categories]
        rows.append("| " + " | ".join([task] + [_fmt(v) for v in values]) + " |")
    return "\n".join(rows)


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.1f}"
