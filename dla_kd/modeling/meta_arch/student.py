"""The student of a distillation run: its config (what gets exported) and its initialisation."""
import copy
import logging
from typing import List

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from torch import nn

from ...config import add_distill_config

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
    add_distill_config(scfg)  # reset: the student alone distils nothing
    scfg.freeze()
    return scfg


def check_compatible(cfg, tcfg) -> None:
    """Teacher and student must agree on the class set (count, and names where datasets say)."""
    s_k, t_k = cfg.MODEL.ROI_HEADS.NUM_CLASSES, tcfg.MODEL.ROI_HEADS.NUM_CLASSES
    if s_k != t_k:
        raise ValueError(
            f"Teacher/student class mismatch: the teacher ({cfg.DISTILL.TEACHER.CONFIG}) predicts {t_k} classes, "
            f"the student {s_k} (MODEL.ROI_HEADS.NUM_CLASSES)"
        )
    s_classes, t_classes = _classes(cfg), _classes(tcfg)
    if s_classes is not None and t_classes is not None and s_classes != t_classes:
        raise ValueError(
            f"Teacher/student dataset mismatch: the teacher was configured for {tcfg.DATASETS.TRAIN[0]} with classes "
            f"{t_classes}, the student trains on {cfg.DATASETS.TRAIN[0]} with classes {s_classes}"
        )
    if "mask_kd" in cfg.DISTILL.LOSSES and not (cfg.MODEL.MASK_ON and tcfg.MODEL.MASK_ON):
        raise ValueError("DISTILL.LOSSES has 'mask_kd' but the student or the teacher has no mask head (MODEL.MASK_ON)")
    if cfg.INPUT.FORMAT != tcfg.INPUT.FORMAT and {cfg.INPUT.FORMAT, tcfg.INPUT.FORMAT} != {"RGB", "BGR"}:
        raise ValueError(f"Cannot convert student input format {cfg.INPUT.FORMAT} to the teacher's {tcfg.INPUT.FORMAT}")


def _classes(cfg):
    if not cfg.DATASETS.TRAIN:
        return None
    return MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", None)


def copy_teacher_heads(student: nn.Module, teacher: nn.Module, trainable: bool) -> None:
    """SimKD: the student's RPN and ROI heads become copies of the teacher's (frozen unless
    ``trainable``)."""
    for name in ("proposal_generator", "roi_heads"):
        getattr(student, name).load_state_dict(getattr(teacher, name).state_dict())
        getattr(student, name).requires_grad_(trainable)


def init_from_teacher(student: nn.Module, teacher: nn.Module, prefixes: List[str]) -> List[str]:
    """Copy teacher tensors into the student where names (under ``prefixes``, in the teacher's
    naming) and shapes match; a SimKD student's ``backbone.inner.*`` maps to the teacher's
    ``backbone.*``. Returns the copied student names; logs what could not be copied."""
    t_state = teacher.state_dict()
    copied, skipped = [], []
    for name, value in student.state_dict().items():
        t_name = name.replace("backbone.inner.", "backbone.", 1)
        if not any(t_name.startswith(p) for p in prefixes):
            continue
        if t_name in t_state and t_state[t_name].shape == value.shape:
            value.copy_(t_state[t_name])
            copied.append(name)
        else:
            skipped.append(name)
    logger.info(f"Initialised {len(copied)} student tensors from the teacher; {len(skipped)} did not match: {skipped[:5]}")
    if not copied:
        raise ValueError(f"DISTILL.INIT_FROM_TEACHER: no student tensor under {prefixes} matches the teacher's shapes")
    return copied
