"""A finished run of another report taken over instead of trained again (``projects/kd_benchmark/tools/kd_report.py
--reuse``): same training, other evaluation datasets.

A report that evaluates on more datasets than an earlier one (configs/synthetic/unlabeled also
scores the other domain) often repeats runs of it: same config, pages, schedule and seed. Such a
run is taken over when its training config equals the new run's apart from where it writes and
what it evaluates on (``IGNORED_KEYS``), paths compared as the files they name, and it learned
from the same teacher weights (sha256). The new run folder then holds

    model_final.pth         a symlink to the donor's (a deleted donor makes the run train again)
    eval_<dataset>.json     the donor's final evaluations of the datasets both evaluate; the
                            others evaluated here (--eval-only, in ``evaluated_here/``), marked
                            with the donor's final iteration and ``reused_from``
    metrics.json            the donor's (learning curves); its evaluation keys prefixed with the
                            dataset as Detectron2 names them when a run evaluates several
    config.yaml, teacher.json   the donor's (provenance)
    reused_from.json        the donor folder and the keys that were allowed to differ
"""
import functools
import json
import os
from typing import Dict, List, Optional, Sequence

from dla_kd.checkpoint import checkpoint_problem
from dla_kd.config import get_dla_kd_cfg
from dla_kd.config.flatten import comparable_values
from dla_kd.utils.files import atomic_copy, atomic_write_json, atomic_write_text
from .report import load_eval
from .run_info import TEACHER_FILE

REUSED_FILE = "reused_from.json"
EVAL_DIR = "evaluated_here"  # the --eval-only run of the datasets the donor did not evaluate
IGNORED_KEYS = ("OUTPUT_DIR", "DATASETS.TEST")  # where the run writes and what it is scored on
COPIED_FILES = ("config.yaml", TEACHER_FILE)
EVAL_TASKS = ("bbox/", "segm/")  # metrics.json keys of the periodic evaluations


_flat = comparable_values  # {"MODEL.WEIGHTS": value, ...}, tuples as lists, file paths as real paths


_ABSENT = "<absent>"  # a key neither a config nor the code's defaults have


@functools.lru_cache(maxsize=1)
def _default_values() -> Dict:
    """The code's config defaults, flattened as :func:`_flat` does (built once per process)."""
    return _flat(get_dla_kd_cfg())


def training_differences(donor_cfg, cfg, ignored: Sequence[str] = ()) -> List[str]:
    """Keys (with both values) in which two configs differ, apart from ``IGNORED_KEYS`` and
    ``ignored``. A key one of them lacks (a config.yaml written before the code added the key)
    counts with the code's default, which a new key sets to the behaviour before it: a donor
    without it trained as one with the default does."""
    defaults = _default_values()
    a, b = _flat(donor_cfg), _flat(cfg)
    skip = set(IGNORED_KEYS) | set(ignored)
    differences = []
    for k in sorted((set(a) | set(b)) - skip):
        there, here = a.get(k, defaults.get(k, _ABSENT)), b.get(k, defaults.get(k, _ABSENT))
        if there != here:
            differences.append(f"{k}: {there!r} there, {here!r} here")
    return differences


def _read_json(path: str) -> Optional[Dict]:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def run_config(run_dir: str):
    """The CfgNode a run folder's ``config.yaml`` holds."""
    from detectron2.config import CfgNode

    with open(os.path.join(run_dir, "config.yaml")) as f:
        return CfgNode.load_cfg(f)


def reuse_problem(donor_dir: str, cfg, final_iteration: int, teacher_sha256: Optional[str] = None) -> Optional[str]:
    """Why ``donor_dir`` cannot stand for a run of ``cfg`` (None: it can): not finished (final
    evaluation of its first test dataset at ``final_iteration``, loadable model_final.pth), other
    training settings, or another teacher than the one of sha256 ``teacher_sha256``."""
    if not os.path.isfile(os.path.join(donor_dir, "config.yaml")):
        return f"{donor_dir} has no config.yaml"
    donor_cfg = run_config(donor_dir)
    if load_eval(donor_dir, donor_cfg.DATASETS.TEST[0], final_iteration=final_iteration) is None:
        return f"{donor_dir} has not finished (no final evaluation of {donor_cfg.DATASETS.TEST[0]})"
    problem = checkpoint_problem(os.path.join(donor_dir, "model_final.pth"))
    if problem:
        return problem
    changed = training_differences(donor_cfg, cfg)
    if changed:
        return f"{donor_dir} trained otherwise ({'; '.join(changed[:5])}{' ...' if len(changed) > 5 else ''})"
    donor_teacher = _read_json(os.path.join(donor_dir, TEACHER_FILE))
    if teacher_sha256 and donor_teacher and donor_teacher.get("sha256") != teacher_sha256:
        return f"{donor_dir} learned from another teacher (sha256 {donor_teacher.get('sha256', '?')[:12]})"
    return None


def adopt_run(donor_dir: str, output_dir: str, datasets: Sequence[str], final_iteration: int) -> List[str]:
    """Take over ``donor_dir`` (checked with :func:`reuse_problem`) into ``output_dir``: the
    checkpoint symlink, the copied files and the donor's final evaluations of ``datasets``.
    Returns the datasets the donor has not evaluated (to evaluate here, then
    :func:`collect_evaluations`)."""
    os.makedirs(output_dir, exist_ok=True)
    link = os.path.join(output_dir, "model_final.pth")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(os.path.realpath(os.path.join(donor_dir, "model_final.pth")), link)
    for name in COPIED_FILES:
        if os.path.isfile(os.path.join(donor_dir, name)):
            atomic_copy(os.path.join(donor_dir, name), os.path.join(output_dir, name))
    _copy_metrics(donor_dir, output_dir, several=len(datasets) > 1)
    missing = []
    for dataset in datasets:
        name = f"eval_{dataset}.json"
        if load_eval(donor_dir, dataset, final_iteration=final_iteration) is None:
            missing.append(dataset)
        else:
            atomic_copy(os.path.join(donor_dir, name), os.path.join(output_dir, name))
    atomic_write_json(os.path.join(output_dir, REUSED_FILE), {
        "donor": os.path.realpath(donor_dir), "ignored_keys": list(IGNORED_KEYS), "evaluated_here": missing}, indent=2)
    return missing


def _copy_metrics(donor_dir: str, output_dir: str, several: bool) -> None:
    """The donor's metrics.json; when the donor evaluated one dataset and the run evaluates
    several, its evaluation keys ("bbox/AP") named as Detectron2 names them then
    ("<dataset>/bbox/AP"), so the learning curve is found (kd_benchmark.curves.curve_metric)."""
    source = os.path.join(donor_dir, "metrics.json")
    if not os.path.isfile(source):
        return
    tests = run_config(donor_dir).DATASETS.TEST
    prefix = f"{tests[0]}/" if several and len(tests) == 1 else ""
    lines = []
    with open(source) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut by a kill mid-write
                continue
            entry = {(prefix + k if k.startswith(EVAL_TASKS) else k): v for k, v in entry.items()}
            lines.append(json.dumps(entry) + "\n")
    atomic_write_text(os.path.join(output_dir, "metrics.json"), "".join(lines))


def collect_evaluations(eval_dir: str, output_dir: str, datasets: Sequence[str], final_iteration: int) -> None:
    """Move the --eval-only evaluations of ``datasets`` (run into ``eval_dir``: its own config,
    lock and inference files) into the taken-over run's ``output_dir``, marked as those of its final
    iteration, with where the weights came from."""
    reused = _read_json(os.path.join(output_dir, REUSED_FILE)) or {}
    for dataset in datasets:
        name = f"eval_{dataset}.json"
        payload = _read_json(os.path.join(eval_dir, name))
        if payload is None:
            raise FileNotFoundError(f"{os.path.join(eval_dir, name)}: the evaluation of the taken-over run is missing")
        payload.update(iteration=final_iteration, reused_from=reused.get("donor"))
        atomic_write_json(os.path.join(output_dir, name), payload, indent=2)


def reused_from(run_dirs: Sequence[Optional[str]]) -> Optional[str]:
    """The donor folder of a taken-over run (its first ``reused_from.json`` in ``run_dirs``)."""
    for d in run_dirs:
        record = _read_json(os.path.join(d, REUSED_FILE)) if d else None
        if record:
            return record["donor"]
    return None
