"""A report's published copy (``--publish`` / ``--publish-runs`` of ``projects/kd_benchmark/tools/kd_report.py``,
committed under ``results/``): what a finished run's rows and curves need, so that a later session
on a fresh machine collects the run instead of training it again, and the table's teacher with
the teachers retrained beside it.

    <publish>/runs/<run>/seed<k>/          eval_*.json, metrics.json, config.yaml, teacher.json,
                                           reused_from.json, kd_balance.json of each finished run
    <publish>/runs/teacher/                the table's teacher (the one the published runs learned from)
    <publish>/runs/teacher/retrained/<sha12>/   teachers retrained on later machines
"""
import json
import os

from dla_kd.distill.balance import BALANCE_FILE
from dla_kd.utils.files import atomic_copy
from .report import load_eval
from .reused_runs import REUSED_FILE, run_config, training_differences
from .run_info import TEACHER_FILE, weights_sha256, write_teacher_record

# With the evaluations: the curve, the config, the teacher, the donor of a taken-over run and the
# KD weights calibrated by DISTILL.BALANCE (each seed calibrates its own).
PUBLISHED_FILES = ("metrics.json", "config.yaml", TEACHER_FILE, REUSED_FILE, BALANCE_FILE)


def publish_run(output_dir: str, published_dir: str) -> None:
    """Copy what a finished run's rows and curve need (final evaluation of every test dataset,
    metrics, config, the teacher it was distilled from, its calibrated KD weights) from
    ``output_dir`` to ``published_dir`` (never checkpoints):
    a later session on a fresh machine collects the run from there instead of training it again."""
    os.makedirs(published_dir, exist_ok=True)
    evaluations = sorted(n for n in os.listdir(output_dir) if n.startswith("eval_") and n.endswith(".json"))
    for name in (*evaluations, *PUBLISHED_FILES):
        if os.path.isfile(os.path.join(output_dir, name)):
            # Atomic: a report written meanwhile (another thread) reads the published folders.
            atomic_copy(os.path.join(output_dir, name), os.path.join(published_dir, name))


def published_runs_left_out(publish_dir: str, json_name: str, runs) -> list:
    """Runs of the published report ``publish_dir/json_name`` (if any) that are not the teacher
    or one of ``runs``."""
    path = os.path.join(publish_dir, json_name)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        published = [row["run"] for row in json.load(f).get("rows", [])]
    return [name for name in published if name != "teacher" and name not in runs]


RETRAINED_DIR = "retrained"  # <publish>/runs/teacher/retrained/<sha256[:12]>/: teachers retrained later


def publish_teacher(teacher_dir: str, published_dir: str, weights: str, dataset: str, final_iteration,
                    evaluated_only: bool = False) -> None:
    """Publish the teacher of this machine (``teacher_dir``, weights ``weights``). A published
    teacher trained the same way that scores otherwise is one an earlier session trained (CPU
    training is not bit-reproducible; checkpoints do not outlive a machine): it stays the table's
    teacher, the one the published runs learned from, and this one is published beside it in
    ``<published_dir>/retrained/<sha12>/`` with its ``teacher.json``. A teacher trained otherwise
    (another config; both folders must have their config.yaml to tell; a key one of them lacks, added
    to the code after the published teacher trained, counts with its default) replaces it. ``evaluated_only``:
    given weights (--teacher-weights), only evaluated here: their run's SEED (the call's first seed)
    says nothing about them and does not count either."""
    here = load_eval(teacher_dir, dataset, final_iteration=final_iteration)
    there = load_eval(published_dir, dataset, final_iteration=final_iteration)
    configs = [os.path.join(d, "config.yaml") for d in (published_dir, teacher_dir)]
    ignored = ("SEED",) if evaluated_only else ()
    if there is None or there == here or (all(map(os.path.isfile, configs)) and training_differences(
            run_config(published_dir), run_config(teacher_dir), ignored=ignored)):
        publish_run(teacher_dir, published_dir)
        return
    write_teacher_record(teacher_dir, weights, here)
    target = os.path.join(published_dir, RETRAINED_DIR, weights_sha256(weights)[:12])
    publish_run(teacher_dir, target)
    print(f"[kd_report] the teacher of this machine (bbox AP {here['bbox']['AP']:.2f}) is a retrained one: the "
          f"published teacher (bbox AP {there['bbox']['AP']:.2f}) stays the table's teacher, this one is "
          f"published to {target}", flush=True)
