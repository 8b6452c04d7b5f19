"""Meta-architectures registered in Detectron2's META_ARCH_REGISTRY."""
from .distill_rcnn import DistillGeneralizedRCNN

__all__ = ["DistillGeneralizedRCNN"]
