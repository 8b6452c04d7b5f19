"""dla-kd: knowledge distillation for document layout analysis, built on Detectron2.

``import dla_kd`` registers everything dla-kd adds to Detectron2's registries and catalogs:
datasets (``dla_kd.data``), backbones and meta-architectures (``dla_kd.modeling``).
"""
from ._detectron2 import require_detectron2
from ._version import __version__

require_detectron2()

from . import data, modeling  # noqa: E402,F401  (registration side effects)
from .config import add_dla_kd_config, get_dla_kd_cfg  # noqa: E402
from .predict import Predictor  # noqa: E402

__all__ = ["add_dla_kd_config", "get_dla_kd_cfg", "Predictor", "__version__"]
