"""What a run folder records about its invocations: one config file per invocation, compared on
``--resume``.

* The first start of a training writes ``config.yaml``; every ``--resume`` of a run with a
  checkpoint writes ``config_resume_<k>.yaml`` (k = 1, 2, ...) beside it. No record is ever
  overwritten, so the folder says with which settings each stretch of training ran. All are
  written atomically (a full disk leaves the previous file or none, never an empty one).
* ``--resume`` compares the new config with the run's latest record (:func:`resume_changes`) and
  logs every difference. Differences that change what is trained (:data:`TRAINED_PREFIXES`:
  model, distillation losses and teacher, training data, input pipeline) are refused
  (:class:`ConfigChangeError`) unless ``--allow-config-change``: the weights would no longer be
  described by one config, and a changed set of parameters cannot take the checkpoint's
  optimizer state anyway (nor can another ``SOLVER.OPTIMIZER`` or ``SOLVER.AMP.ENABLED``: refused
  alike). Other solver changes (``SOLVER.*``: MAX_ITER, STEPS, BASE_LR, ...) are applied:
  the optimizer and the LR schedule follow the new config from the resumed iteration on
  (``Trainer.resume_or_load``); everything else (evaluation, logging, devices, ``MODEL.WEIGHTS``,
  which a resume does not load) is listed only.
* ``--eval-only`` never replaces the record of a run: into a folder without ``config.yaml`` it
  writes ``config.yaml``, otherwise ``config_eval__<weights-stem>.yaml`` (see ``eval_outputs.py``).
"""
import glob
import logging
import os
import re
from typing import Dict, List, NamedTuple, Optional

from detectron2.config import CfgNode

from ..config import get_dla_kd_cfg
from ..config.flatten import comparable_values
from ..utils.files import atomic_write_text

logger = logging.getLogger(__name__)

ALLOW_CHANGE_FLAG = "--allow-config-change"
FIRST_RECORD = "config.yaml"
_RESUME_RECORD = re.compile(r"^config_resume_(\d+)\.yaml$")

# Keys that define what the weights were trained to be (changed on --resume: refused unless allowed).
TRAINED_PREFIXES = ("MODEL.", "DISTILL.", "INPUT.", "DATASETS.TRAIN", "DATASETS.UNLABELED", "DATALOADER.")
# ... except these and the inference-only ``*_TEST`` keys, which do not change the training: where
# it runs, what a resume ignores.
NOT_TRAINED = ("MODEL.DEVICE", "MODEL.WEIGHTS", "DATALOADER.NUM_WORKERS", "DISTILL.TEACHER.SANITY_CHECK.")
SOLVER_PREFIX = "SOLVER."
# Solver keys whose change the checkpoint's optimizer state cannot follow (refused like TRAINED_PREFIXES).
SOLVER_STATE = ("SOLVER.OPTIMIZER", "SOLVER.AMP.ENABLED")
IGNORED = ("OUTPUT_DIR",)  # the folder itself (may be spelt relative or absolute)


class ConfigChangeError(ValueError):
    """``--resume`` with a config that changes what the run trains."""


class Change(NamedTuple):
    key: str
    recorded: object
    new: object
    kind: str  # "trained", "solver" or "other"

    def __str__(self) -> str:
        return f"{self.key}: {self.recorded!r} -> {self.new!r}"


def has_checkpoint_files(output_dir: str) -> bool:
    """Whether ``output_dir`` holds a run to resume (``last_checkpoint`` or a ``model_*.pth``)."""
    return os.path.isfile(os.path.join(output_dir, "last_checkpoint")) or bool(
        glob.glob(os.path.join(glob.escape(output_dir), "model_*.pth"))
    )


def resume_records(output_dir: str) -> List[str]:
    """``config_resume_<k>.yaml`` files of ``output_dir``, in order of k."""
    found = []
    for name in os.listdir(output_dir) if os.path.isdir(output_dir) else ():
        m = _RESUME_RECORD.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(output_dir, name)))
    return [path for _, path in sorted(found)]


def latest_record(output_dir: str) -> Optional[str]:
    """The config the run last trained with: its last resume record, else ``config.yaml``."""
    records = resume_records(output_dir)
    if records:
        return records[-1]
    first = os.path.join(output_dir, FIRST_RECORD)
    return first if os.path.isfile(first) else None


def _kind(key: str) -> str:
    if key.startswith(SOLVER_PREFIX):
        return "trained" if key.startswith(SOLVER_STATE) else "solver"
    if key.startswith(TRAINED_PREFIXES) and not key.startswith(NOT_TRAINED) and not key.endswith("_TEST"):
        return "trained"
    return "other"


def config_changes(recorded: CfgNode, cfg: CfgNode) -> List[Change]:
    """Every key in which ``cfg`` differs from ``recorded`` (a key one lacks counts with the
    code's default: a record written before the key existed trained as with its default)."""
    defaults = comparable_values(get_dla_kd_cfg())
    a, b = comparable_values(recorded), comparable_values(cfg)
    absent = "<absent>"
    changes = []
    for key in sorted((set(a) | set(b)) - set(IGNORED)):
        old, new = a.get(key, defaults.get(key, absent)), b.get(key, defaults.get(key, absent))
        if old != new:
            changes.append(Change(key, old, new, _kind(key)))
    return changes


def load_record(path: str) -> CfgNode:
    with open(path) as f:
        return CfgNode.load_cfg(f)


def resume_changes(cfg: CfgNode) -> Optional[List[Change]]:
    """Differences between ``cfg`` and the latest record of its ``OUTPUT_DIR``; ``None`` when the
    folder has no checkpoint (nothing to resume) or no record (a warning: nothing to compare)."""
    output_dir = cfg.OUTPUT_DIR
    if not has_checkpoint_files(output_dir):
        return None
    record = latest_record(output_dir)
    if record is None:
        logger.warning(f"{output_dir} has checkpoints but no {FIRST_RECORD}: the resumed config cannot be compared")
        return None
    return config_changes(load_record(record), cfg)


def check_resume_config(cfg: CfgNode, allow_change: bool = False) -> List[Change]:
    """On ``--resume``: log every difference from the run's recorded config; raise
    :class:`ConfigChangeError` listing them if one changes what is trained and ``allow_change``
    is false. Returns the differences (empty: none, or nothing to resume)."""
    changes = resume_changes(cfg) or []
    if not changes:
        return []
    record = latest_record(cfg.OUTPUT_DIR)
    listing = "\n  ".join(f"[{c.kind}] {c}" for c in changes)
    trained = [c for c in changes if c.kind == "trained"]
    if trained and not allow_change:
        raise ConfigChangeError(
            f"--resume of {cfg.OUTPUT_DIR} with a config that differs from the run's ({record}) in what it trains "
            f"({', '.join(c.key for c in trained)}):\n  {listing}\n"
            f"Resume with the run's config, train into another OUTPUT_DIR (MODEL.WEIGHTS <checkpoint> to start "
            f"from its weights), or add {ALLOW_CHANGE_FLAG} to resume with the new settings anyway."
        )
    applied = "; solver changes apply from the resumed iteration on" if any(c.kind == "solver" for c in changes) else ""
    logger.warning(f"--resume of {cfg.OUTPUT_DIR}: the config differs from {record}{applied}:\n  {listing}")
    return changes


def record_path(cfg: CfgNode, resume: bool, eval_only: bool, weights_stem: str = "") -> str:
    """Where this invocation's config is recorded (see the module docstring)."""
    output_dir = cfg.OUTPUT_DIR
    first = os.path.join(output_dir, FIRST_RECORD)
    if eval_only:
        return first if not os.path.exists(first) else os.path.join(output_dir, f"config_eval__{weights_stem}.yaml")
    if resume and has_checkpoint_files(output_dir) and os.path.exists(first):
        records = resume_records(output_dir)
        k = int(_RESUME_RECORD.match(os.path.basename(records[-1])).group(1)) + 1 if records else 1
        return os.path.join(output_dir, f"config_resume_{k}.yaml")
    return first


def write_record(cfg: CfgNode, path: str) -> str:
    """Write ``cfg`` to ``path`` atomically; returns ``path``."""
    atomic_write_text(path, cfg.dump())
    return path
