"""Backbones and meta-architectures dla-kd registers in Detectron2's registries."""
from . import backbone, meta_arch, projected_backbone  # noqa: F401
