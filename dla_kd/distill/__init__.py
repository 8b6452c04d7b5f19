"""Knowledge distillation: registered losses (``DISTILL.LOSSES``), their pure-tensor
implementations (``dla_kd.distill.losses``) and per-loss weight schedules."""
from . import distillers  # noqa: F401  (registration)
from .base import DISTILLER_REGISTRY, DistillContext, Distiller, build_distillers, register_distiller
from .schedule import LossWeightSchedule

__all__ = [
    "DISTILLER_REGISTRY", "DistillContext", "Distiller", "LossWeightSchedule", "build_distillers", "register_distiller",
]
