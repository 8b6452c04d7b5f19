"""Building the frozen teacher of a distillation run from ``DISTILL.TEACHER.*``."""
import contextlib
import logging
import os
import types

import torch
from detectron2.modeling import build_model
from torch import nn

from ...checkpoint import load_weights_strict
from ...config import load_config
from ...utils.files import file_sha256

logger = logging.getLogger(__name__)

_HALF_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_teacher_cfg(cfg):
    """The teacher's own config: ``DISTILL.TEACHER.CONFIG`` + ``DISTILL.TEACHER.OPTS``, on the
    student's device. Relative paths are resolved against the working directory."""
    path = cfg.DISTILL.TEACHER.CONFIG
    if not path:
        raise ValueError("DISTILL.TEACHER.CONFIG is empty: a distillation config must name the teacher's config file")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Teacher config {path} (DISTILL.TEACHER.CONFIG) not found; relative paths are resolved "
            f"against the working directory {os.getcwd()}"
        )
    tcfg = load_config(path, cfg.DISTILL.TEACHER.OPTS, freeze=False)
    tcfg.MODEL.DEVICE = cfg.MODEL.DEVICE
    if tcfg.MODEL.META_ARCHITECTURE != "GeneralizedRCNN":
        raise ValueError(
            f"The teacher config {path} describes a {tcfg.MODEL.META_ARCHITECTURE}; a teacher must be a plain "
            "GeneralizedRCNN (Mask R-CNN / Cascade R-CNN). Extract a distilled student first (tools/extract_student.py)."
        )
    if cfg.DISTILL.TEACHER.DTYPE not in _HALF_DTYPES:
        raise ValueError(f"DISTILL.TEACHER.DTYPE must be one of {sorted(_HALF_DTYPES)}, got {cfg.DISTILL.TEACHER.DTYPE!r}")
    tcfg.freeze()
    return tcfg


def _stay_in_eval(self, mode: bool = True):
    return nn.Module.train(self, False)


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    """No gradients, eval mode for good: ``teacher.train()`` keeps it in eval (BN statistics and
    DropPath of a teacher must not change while it produces targets)."""
    teacher.requires_grad_(False)
    teacher.eval()
    teacher.train = types.MethodType(_stay_in_eval, teacher)
    return teacher


class TeacherMismatchError(ValueError):
    """The teacher's weights file is not the one the config names by sha256."""


def check_teacher_sha256(path: str, expected: str) -> None:
    """Refuse ``path`` unless its sha256 is ``expected`` (``DISTILL.TEACHER.SHA256``; empty: no check)."""
    if not expected:
        return
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Teacher weights {path} (DISTILL.TEACHER.WEIGHTS) not found")
    found = file_sha256(path)
    if found != expected.strip().lower():
        raise TeacherMismatchError(
            f"Teacher weights {path} have sha256 {found}, but DISTILL.TEACHER.SHA256 expects {expected}: "
            "another (retrained or swapped) teacher; point DISTILL.TEACHER.WEIGHTS at the recorded file"
        )


def build_teacher(cfg, tcfg) -> nn.Module:
    """Build, load and freeze the teacher described by ``tcfg``."""
    teacher = build_model(tcfg)
    weights = cfg.DISTILL.TEACHER.WEIGHTS
    if weights:
        check_teacher_sha256(weights, cfg.DISTILL.TEACHER.SHA256)
        load_weights_strict(teacher, weights, "Teacher weights (DISTILL.TEACHER.WEIGHTS)")
    elif cfg.DISTILL.TEACHER.ALLOW_RANDOM_INIT:
        logger.warning("DISTILL.TEACHER.ALLOW_RANDOM_INIT: the teacher has random weights (tests/benchmarks only)")
    else:
        raise ValueError(
            "DISTILL.TEACHER.WEIGHTS is empty: distillation needs the trained teacher's checkpoint "
            "(train it with tools/train_net.py on DISTILL.TEACHER.CONFIG, or point at published weights)"
        )
    return freeze_teacher(teacher)


def teacher_precision(device: torch.device, dtype_name: str):
    """Autocast context of the teacher forward (``DISTILL.TEACHER.DTYPE``): half precision on CUDA
    if asked; otherwise autocast switched *off* on the device, so that a float32 teacher (and every
    CPU teacher) computes in float32 also inside the trainer's autocast (``SOLVER.AMP.ENABLED``).
    The teacher's inputs are float32 (``teacher_features.pad_each``)."""
    dtype = _HALF_DTYPES[dtype_name]
    if dtype is not None and device.type == "cuda":
        return torch.autocast("cuda", dtype=dtype)
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
