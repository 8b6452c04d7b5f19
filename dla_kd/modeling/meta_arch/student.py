"""The student of a distillation run: its config (what gets exported) and its initialisation."""
import copy
import logging
from typing import List

from detectron2.config import CfgNode
from torch import nn

from ...checkpoint import plain_name
from ...config import add_distill_config
from ..init_sources import record_init_source
from .class_check import check_same_classes

logger = logging.getLogger(__name__)

# Config of the heads a SimKD student takes over from its teacher.
TEACHER_HEAD_KEYS = (
    "PROPOSAL_GENERATOR", "ANCHOR_GENERATOR", "RPN", "ROI_HEADS",
    "ROI_BOX_HEAD", "ROI_BOX_CASCADE_HEAD", "ROI_MASK_HEAD", "MASK_ON",
)


def uses_simkd(cfg) -> bool:
    return "simkd" in cfg.DISTILL.LOSSES


def teacher_feature_width(backbone) -> int:
    """The teacher backbone's output width (FPN levels share one), which SimKD projects to."""
    widths = {s.channels for s in backbone.output_shape().values()}
    if len(widths) != 1:
        raise ValueError(f"SimKD needs a teacher whose feature levels share one width, got {sorted(widths)}")
    return widths.pop()


def build_student_cfg(cfg, tcfg, teacher_channels: int) -> CfgNode:
    """The plain ``GeneralizedRCNN`` config of the student alone; it is exported with it.

    For SimKD the student is (its backbone + projector to ``teacher_channels``) with the
    teacher's RPN/ROI-head config, so the exported model is exactly what was trained.
    """
    scfg = cfg.clone()
    scfg.defrost()
    scfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    if uses_simkd(cfg):
        simkd = cfg.DISTILL.SIMKD
        scfg.MODEL.PROJECTED_BACKBONE.BACKBONE_NAME = cfg.MODEL.BACKBONE.NAME
        scfg.MODEL.BACKBONE.NAME = "build_projected_backbone"
        scfg.MODEL.PROJECTED_BACKBONE.OUT_CHANNELS = teacher_channels
        scfg.MODEL.PROJECTED_BACKBONE.PROJECTOR = simkd.PROJECTOR
        scfg.MODEL.PROJECTED_BACKBONE.FACTOR = simkd.FACTOR
        scfg.MODEL.PROJECTED_BACKBONE.NORM = simkd.NORM
        for key in TEACHER_HEAD_KEYS:
            scfg.MODEL[key] = copy.deepcopy(tcfg.MODEL[key])
    add_distill_config(scfg)  # reset: the student alone distils nothing ...
    if "UNLABELED" in scfg.DATASETS:
        scfg.DATASETS.UNLABELED = ()  # ... and reads no unlabeled pages
    scfg.freeze()
    return scfg


def check_compatible(cfg, tcfg) -> None:
    """Teacher and student must agree on the classes (:func:`check_same_classes`), the heads
    the losses need and a convertible input format."""
    check_same_classes(cfg, tcfg)
    if "mask_kd" in cfg.DISTILL.LOSSES and not (cfg.MODEL.MASK_ON and tcfg.MODEL.MASK_ON):
        raise ValueError("DISTILL.LOSSES has 'mask_kd' but the student or the teacher has no mask head (MODEL.MASK_ON)")
    if cfg.INPUT.FORMAT != tcfg.INPUT.FORMAT and {cfg.INPUT.FORMAT, tcfg.INPUT.FORMAT} != {"RGB", "BGR"}:
        raise ValueError(f"Cannot convert student input format {cfg.INPUT.FORMAT} to the teacher's {tcfg.INPUT.FORMAT}")


def copy_teacher_heads(student: nn.Module, teacher: nn.Module, trainable: bool) -> List[str]:
    """SimKD: the student's RPN and ROI heads become copies of the teacher's (frozen unless
    ``trainable``). Returns the copied student names."""
    copied = []
    for name in ("proposal_generator", "roi_heads"):
        state = getattr(teacher, name).state_dict()
        getattr(student, name).load_state_dict(state)
        getattr(student, name).requires_grad_(trainable)
        copied += [f"{name}.{k}" for k in state]
    record_init_source(student, copied, "DISTILL.SIMKD (teacher heads)")
    return copied


def init_from_teacher(student: nn.Module, teacher: nn.Module, prefixes: List[str]) -> List[str]:
    """Copy teacher tensors into the student where names (under ``prefixes``, in the teacher's
    naming) and shapes match; a SimKD student's ``backbone.inner.*`` maps to the teacher's
    ``backbone.*``. Returns the copied student names; logs what could not be copied."""
    t_state = teacher.state_dict()
    copied, skipped = [], []
    for name, value in student.state_dict().items():
        t_name = plain_name(name)
        if not any(t_name.startswith(p) for p in prefixes):
            continue
        if t_name in t_state and t_state[t_name].shape == value.shape:
            value.copy_(t_state[t_name])
            copied.append(name)
        else:
            skipped.append(name)
    (logger.warning if skipped else logger.info)(
        f"DISTILL.INIT_FROM_TEACHER: initialised {len(copied)} of {len(copied) + len(skipped)} student tensors "
        f"under {prefixes} from the teacher; {len(skipped)} differ in name or shape (kept as built): {skipped[:5]}"
    )
    if not copied:
        raise ValueError(f"DISTILL.INIT_FROM_TEACHER: no student tensor under {prefixes} matches the teacher's shapes")
    record_init_source(student, copied, "DISTILL.INIT_FROM_TEACHER")
    return copied
