"""How much the teacher a distillation run learned from moves its AP, when a benchmark's runs
learned from several trainings of one teacher config (``projects/kd_benchmark/tools/kd_report.py`` retrains the teacher on
every fresh machine; CPU training is not bit-reproducible, so each scores a little otherwise).

The published runs (``<publish>/runs/<recipe>/seed<k>/``: ``eval_<dataset>.json`` and the
``teacher.json`` naming the teacher's sha256 and AP) are fitted by least squares with one additive
effect per recipe, per seed and per teacher::

    AP(recipe, seed, teacher) = a_recipe + b_seed + c_teacher + noise

``c`` of the reference teacher (the table's: the one most runs learned from unless given) and ``b`` of
the smallest seed are 0. A recipe whose seeds learned from two teachers ties their effects together;
the seed effects come from the recipes that share a teacher over their seeds. Standard errors
assume independent noise of one variance (the residuals' over the degrees of freedom left).
"""
import glob
import os
from collections import Counter
from typing import Dict, List, Optional, Sequence

import numpy as np

from .report import load_eval
from .run_info import read_teacher_record


def published_distillation_runs(runs_dir: str, dataset: str, task: str = "bbox") -> List[Dict]:
    """``[{"recipe", "seed", "teacher" (sha256), "teacher_AP", "AP"}]`` of every run folder under
    ``runs_dir`` that has a teacher record and a final evaluation on ``dataset`` (the teacher's and
    the supervised student's folders have no teacher record and are left out)."""
    runs = []
    for run_dir in sorted(glob.glob(os.path.join(runs_dir, "*", "seed*"))):
        teacher = read_teacher_record([run_dir])
        results = load_eval(run_dir, dataset)
        if teacher is None or results is None:
            continue
        recipe, seed = os.path.basename(os.path.dirname(run_dir)), os.path.basename(run_dir)[len("seed"):]
        runs.append({"recipe": recipe, "seed": int(seed), "teacher": teacher["sha256"],
                     "teacher_AP": teacher.get("bbox_AP"), "AP": results[task]["AP"]})
    return runs


def fit_teacher_effects(runs: Sequence[Dict], reference: Optional[str] = None) -> Dict:
    """Least-squares fit of ``AP = recipe + seed + teacher`` over ``runs`` (as returned by
    :func:`published_distillation_runs`). ``reference``: the teacher (sha256 or a prefix of it) whose
    effect is 0; default the one most runs learned from. Returns ``{"reference", "runs", "dof", "residual_std",
    "teachers": [{"teacher", "teacher_AP", "runs", "effect", "se"}], "seeds": [{"seed", "runs",
    "effect", "se"}]}``; an effect the runs cannot separate (no recipe ties it to the others) is
    ``None``."""
    if not runs:
        raise ValueError("no distillation runs to fit")
    counts = Counter(r["teacher"] for r in runs)
    if reference is None:
        reference = counts.most_common(1)[0][0]
    else:
        matches = [t for t in counts if t.startswith(reference)]
        if len(matches) != 1:
            raise ValueError(f"reference teacher {reference!r} matches {len(matches)} of the runs' teachers "
                             f"({', '.join(t[:12] for t in counts)})")
        reference = matches[0]
    recipes = sorted({r["recipe"] for r in runs})
    seeds = sorted({r["seed"] for r in runs})  # the smallest is the base
    teachers = sorted(t for t in counts if t != reference)
    columns = [("recipe", k) for k in recipes] + [("seed", s) for s in seeds[1:]] + [("teacher", t) for t in teachers]
    x = np.array([[float(r[kind] == value) for kind, value in columns] for r in runs])
    y = np.array([r["AP"] for r in runs], dtype=float)
    beta, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    dof = len(runs) - rank
    residual_var = float(((y - x @ beta) ** 2).sum() / dof) if dof > 0 else float("nan")
    cov = residual_var * np.linalg.pinv(x.T @ x)
    row_space = np.linalg.pinv(x) @ x  # projection onto the row space of x
    identity = np.eye(len(columns))

    def effect(column: int):
        # Estimable only if the column lies in the row space of x (else pinv gives an arbitrary split).
        if not np.allclose(row_space[:, column], identity[:, column], atol=1e-8):
            return None, None
        return float(beta[column]), float(np.sqrt(cov[column, column])) if dof > 0 else None

    teacher_ap = {r["teacher"]: r["teacher_AP"] for r in runs}
    out_teachers = [{"teacher": reference, "teacher_AP": teacher_ap[reference], "runs": counts[reference],
                     "effect": 0.0, "se": 0.0}]
    out_seeds = [{"seed": seeds[0], "runs": sum(r["seed"] == seeds[0] for r in runs), "effect": 0.0, "se": 0.0}]
    for i, (kind, value) in enumerate(columns):
        if kind == "teacher":
            est, se = effect(i)
            out_teachers.append({"teacher": value, "teacher_AP": teacher_ap[value], "runs": counts[value],
                                 "effect": est, "se": se})
        elif kind == "seed":
            est, se = effect(i)
            out_seeds.append({"seed": value, "runs": sum(r["seed"] == value for r in runs), "effect": est, "se": se})
    return {"reference": reference, "runs": len(runs), "dof": int(dof),
            "residual_std": float(np.sqrt(residual_var)) if dof > 0 else None,
            "teachers": out_teachers, "seeds": out_seeds}


def _number(value: Optional[float], fmt: str = "+.2f") -> str:
    return "-" if value is None else format(value, fmt)


def teacher_effect_markdown(fit: Dict, task: str, dataset: str) -> str:
    """The fit as a Markdown table per teacher and per seed."""
    lines = [f"Effect of the teacher on the students' {task} AP ({dataset}; least squares over {fit['runs']} "
             f"distillation runs: AP = recipe + seed + teacher, residual std {_number(fit['residual_std'], '.2f')} "
             f"AP on {fit['dof']} degrees of freedom). Effects are relative to the reference teacher and the smallest seed; "
             "`-`: not separable from the other effects with these runs.", "",
             "| teacher (sha256) | its bbox AP | runs | effect on the student's AP | standard error |",
             "|---|---:|---:|---:|---:|"]
    for t in fit["teachers"]:
        name = t["teacher"][:12] + (" (reference)" if t["teacher"] == fit["reference"] else "")
        lines.append(f"| {name} | {_number(t['teacher_AP'], '.1f')} | {t['runs']} | {_number(t['effect'])} "
                     f"| {_number(t['se'], '.2f')} |")
    lines += ["", "| seed | runs | effect on the student's AP | standard error |", "|---|---:|---:|---:|"]
    for s in fit["seeds"]:
        lines.append(f"| {s['seed']} | {s['runs']} | {_number(s['effect'])} | {_number(s['se'], '.2f')} |")
    return "\n".join(lines) + "\n"
