"""In-process teachers from other toolkits: a registry of plugins, one class per toolkit.

A plugin is a class registered in :data:`EXTERNAL_TEACHER_REGISTRY` under the name users give
``tools/pseudo_label.py --teacher NAME`` (:func:`register_external_teacher`), built as
``cls(model=None, num_threads=None, min_score=0.0)`` and exposing:

- ``class_names``: the teacher's own class names (mapped onto a dla-kd table by a class map,
  :mod:`dla_kd.predict.external.class_map`);
- ``model_file``: the weights it runs (their sha256 goes into the pseudo-label file's teacher
  record), ``version``: the toolkit's version;
- ``__call__(image_rgb)``: (H, W, 3) uint8 RGB page -> list of ``{"class_name": str, "score":
  float, "bbox": [x, y, w, h] page pixels, "segmentation": [[x1, y1, ...], ...] or None}``,
  scoring at least ``min_score``.

Plugins of your own: register them in a module and name it with ``--plugin-module``::

    from dla_kd.predict.external import ExternalTeacher, register_external_teacher

    @register_external_teacher("my-yolo")
    class MyYolo(ExternalTeacher):
        ...
"""
import importlib
from typing import Dict, List, Optional, Sequence

import numpy as np
from detectron2.utils.registry import Registry

from ...utils.files import file_fingerprint

EXTERNAL_TEACHER_REGISTRY = Registry("EXTERNAL_TEACHER")
EXTERNAL_TEACHER_REGISTRY.__doc__ = """Teachers from other toolkits, by the name users type
(``--teacher rapid-layout``); see :mod:`dla_kd.predict.external.registry` for the interface."""

# Modules of the shipped plugins, imported on first lookup (their toolkits are optional extras).
BUILTIN_PLUGINS = {"rapid-layout": "dla_kd.predict.external.rapid_layout"}


def register_external_teacher(name: str):
    """Class decorator: register a plugin under ``name`` (Detectron2's ``Registry.register`` names
    entries by ``__name__``; toolkit names such as "rapid-layout" are not identifiers)."""

    def wrap(cls):
        EXTERNAL_TEACHER_REGISTRY._do_register(name, cls)
        cls.name = name
        return cls

    return wrap


class ExternalTeacher:
    """Base of the plugins (interface in the module docstring)."""

    name = ""
    class_names: List[str] = []
    model_file: Optional[str] = None
    version: str = ""

    def __call__(self, image_rgb: np.ndarray) -> List[Dict]:
        raise NotImplementedError

    def record(self) -> Dict:
        """The teacher record of the pseudo-label file's ``info``."""
        return {"plugin": self.name, "version": self.version,
                "model": file_fingerprint(self.model_file) if self.model_file else None,
                "classes": list(self.class_names)}


def build_external_teacher(name: str, plugin_modules: Sequence[str] = (), **kwargs) -> ExternalTeacher:
    """The plugin ``name`` built with ``kwargs``; ``plugin_modules`` are imported first (plugins
    of your own register themselves there)."""
    for module in plugin_modules:
        importlib.import_module(module)
    if name not in EXTERNAL_TEACHER_REGISTRY and name in BUILTIN_PLUGINS:
        importlib.import_module(BUILTIN_PLUGINS[name])
    if name not in EXTERNAL_TEACHER_REGISTRY:
        known = sorted({*BUILTIN_PLUGINS, *(k for k, _ in EXTERNAL_TEACHER_REGISTRY)})
        raise KeyError(f"no external teacher {name!r}; known: {known} (plugins of your own: --plugin-module)")
    return EXTERNAL_TEACHER_REGISTRY.get(name)(**kwargs)


def xyxy_to_xywh(box) -> List[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)]
