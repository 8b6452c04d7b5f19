"""Learning curves from Detectron2's ``metrics.json``: the periodic evaluations (``TEST.EVAL_PERIOD``)
log ``bbox/AP`` (and ``segm/AP``) with their iteration; this reads them back, averages over seeds
and draws them (matplotlib, headless)."""
import json
import os
import statistics
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

Curve = List[Tuple[int, float]]  # (iteration, AP) sorted by iteration


def _metric_entries(output_dir: str) -> Iterator[Dict]:
    """The entries of ``<output_dir>/metrics.json`` in the order logged (none if it is missing;
    a line cut by a kill mid-write is skipped)."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        return
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def read_curve(output_dir: str, metric: str = "bbox/AP") -> Curve:
    """(iteration, value) of every logged ``metric`` in ``<output_dir>/metrics.json``; when a
    resumed run logged an iteration twice, the last entry wins."""
    points: Dict[int, float] = {}
    for entry in _metric_entries(output_dir):
        if metric in entry and "iteration" in entry:
            points[int(entry["iteration"])] = float(entry[metric])
    return sorted(points.items())


def last_logged(output_dir: str, prefix: str) -> Dict[str, float]:
    """``{name: value}`` of every scalar ``<prefix><name>`` in ``<output_dir>/metrics.json``, as last
    logged (e.g. ``prefix="kd_weight/"``: the KD weights a run ended with)."""
    values: Dict[str, float] = {}
    for entry in _metric_entries(output_dir):
        values.update({k[len(prefix):]: float(v) for k, v in entry.items() if k.startswith(prefix)})
    return values


def curve_metric(test_datasets: Sequence[str], dataset: str, metric: str = "bbox/AP") -> Optional[str]:
    """Key of ``metric`` on ``dataset`` in the ``metrics.json`` of a run whose DATASETS.TEST is
    ``test_datasets`` (Detectron2 prefixes ``<dataset>/`` when it evaluates several); None when the
    run does not evaluate on ``dataset``."""
    if dataset not in test_datasets:
        return None
    return metric if len(test_datasets) == 1 else f"{dataset}/{metric}"


def mean_curve(curves: Sequence[Curve]) -> Curve:
    """Mean over seeds at the iterations every curve has."""
    curves = [dict(c) for c in curves if c]
    if not curves:
        return []
    common = sorted(set.intersection(*(set(c) for c in curves)))
    return [(it, statistics.fmean(c[it] for c in curves)) for it in common]


def plateau_change(curve: Curve, fraction: float = 1 / 3, max_iter: Optional[int] = None) -> float:
    """Largest |AP - final AP| over the evaluations in the last ``fraction`` of the schedule (the
    benchmark's convergence criterion: below 1 AP). NaN for no curve, or one that stops before
    ``max_iter`` (SOLVER.MAX_ITER: a run still training)."""
    if not curve or (max_iter is not None and curve[-1][0] + 1 < max_iter):
        return float("nan")
    last_iter, last = curve[-1]
    # The evaluation logged at iteration i has seen i + 1 iterations; the final one is logged at
    # MAX_ITER - 1 or MAX_ITER (after training), so the schedule is taken as last_iter long.
    start = last_iter - last_iter * fraction
    return max(abs(v - last) for it, v in curve if it + 1 >= start)


def plot_curves(curves: Dict[str, Curve], path: str, title: str, ylabel: str = "bbox AP",
                labels: Optional[Dict[str, str]] = None) -> str:
    """One line per named curve, written as a PNG to ``path``; ``labels``: legend text per name
    (default: the name)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for name, curve in curves.items():
        if curve:
            xs, ys = zip(*curve)
            ax.plot(xs, ys, marker="o", markersize=3, label=(labels or {}).get(name, name))
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
