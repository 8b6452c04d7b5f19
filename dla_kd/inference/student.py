"""The deployable model of a config: the config itself for a plain detector, the student alone
(student backbone [+ SimKD projector and reused teacher heads]) for a distillation config."""
import logging
import os
from typing import Optional, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_backbone, build_model

from ..checkpoint import load_weights_strict
from ..modeling.meta_arch.student import build_student_cfg, teacher_feature_width, uses_simkd
from ..modeling.meta_arch.teacher import load_teacher_cfg
from .budget import Budget

logger = logging.getLogger(__name__)

STUDENT_CONFIG_FILE = "student_config.yaml"
STUDENT_WEIGHTS_FILE = "model_student.pth"


def is_distill_config(cfg: CfgNode) -> bool:
    return cfg.MODEL.META_ARCHITECTURE == "DistillGeneralizedRCNN"


def deployable_cfg(cfg: CfgNode) -> CfgNode:
    """Plain ``GeneralizedRCNN`` config of what gets deployed. For a distillation config the
    teacher's config is read (SimKD students take its heads) but no teacher weights are needed."""
    if not is_distill_config(cfg):
        return cfg
    tcfg = load_teacher_cfg(cfg)
    width = teacher_feature_width(build_backbone(tcfg)) if uses_simkd(cfg) else 0
    return build_student_cfg(cfg, tcfg, width)


def build_deployable_model(cfg: CfgNode, weights: str, budget: Optional[Budget] = None, device: Optional[str] = None):
    """(plain config, plain model in eval mode with ``weights`` fully loaded). ``weights`` may be
    a plain checkpoint or a distillation checkpoint (its student is taken). A test-time ``budget``
    is applied to the plain config (after a SimKD student took its teacher's head settings).
    ``device``: where the model is built, overriding ``MODEL.DEVICE`` (the plain config says it)."""
    scfg = deployable_cfg(cfg)
    if budget is not None:
        scfg = budget.apply(scfg)
    if device is not None:
        scfg = with_device(scfg, device)
    model = build_model(scfg)
    load_weights_strict(model, weights, "Weights (MODEL.WEIGHTS)")
    return scfg, model.eval()


def with_device(cfg: CfgNode, device: str) -> CfgNode:
    """A defrosted copy of ``cfg`` with ``MODEL.DEVICE`` ``device``."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = device
    return cfg


def extract_student(cfg: CfgNode, weights: str, output_dir: str) -> Tuple[str, str]:
    """Write the student alone: ``<output_dir>/model_student.pth`` (student tensors only: no
    teacher, no distillation adapters) and ``student_config.yaml`` (a plain config whose
    ``MODEL.WEIGHTS`` points at that file). Returns (config path, weights path). The model is
    built on the CPU, whatever ``MODEL.DEVICE`` says (the config written keeps it), so every
    machine writes the same file."""
    scfg, model = build_deployable_model(cfg, weights, device="cpu")
    scfg = with_device(scfg, cfg.MODEL.DEVICE)
    os.makedirs(output_dir, exist_ok=True)
    weights_path = os.path.abspath(os.path.join(output_dir, STUDENT_WEIGHTS_FILE))
    torch.save({"model": model.state_dict(), "source": os.path.abspath(weights)}, weights_path)
    scfg.MODEL.WEIGHTS = weights_path
    config_path = os.path.join(output_dir, STUDENT_CONFIG_FILE)
    with open(config_path, "w") as f:
        f.write(scfg.dump())
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(f"Student ({n_params / 1e6:.2f} M parameters) written to {weights_path}, config {config_path}")
    return config_path, weights_path
