"""dla-kd's additions to Detectron2's config: ``add_dla_kd_config`` is the one entry point."""
from detectron2.config import get_cfg

from .backbone import add_backbone_config
from .datasets import add_datasets_config
from .distill import add_distill_config, add_projected_backbone_config
from .flatten import flatten_config
from .load import load_config
from .solver import add_solver_config


def add_dla_kd_config(cfg) -> None:
    """Add every dla-kd config section (backbones, ``DATASETS.UNLABELED``, ``DISTILL``) with
    defaults to ``cfg``."""
    add_backbone_config(cfg)
    add_datasets_config(cfg)
    add_solver_config(cfg)
    add_projected_backbone_config(cfg)
    add_distill_config(cfg)


def get_dla_kd_cfg():
    """Detectron2's default config extended with dla-kd's keys."""
    cfg = get_cfg()
    add_dla_kd_config(cfg)
    return cfg


__all__ = [
    "add_dla_kd_config", "add_distill_config", "add_projected_backbone_config", "add_solver_config",
    "add_backbone_config", "add_datasets_config", "get_dla_kd_cfg", "flatten_config", "load_config",
]
