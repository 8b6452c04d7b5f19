"""The distiller interface: one registered module per KD loss, selected by ``DISTILL.LOSSES``.

A distiller is built with ``from_config(cfg, student, teacher)`` (the built models give it
channel widths, strides, class counts), may own trainable parameters (adapters, projectors,
fusion modules; they train with the student and are dropped at export), and maps a
:class:`DistillContext` to named, *unweighted* losses. The meta-architecture applies
``DISTILL.<NAME>.WEIGHT`` times the loss's schedule factor.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from detectron2.structures import Instances
from detectron2.utils.registry import Registry
from torch import nn

from .losses import box_masks, image_extents, valid_cells

DISTILLER_REGISTRY = Registry("DISTILLER")


def register_distiller(name: str):
    """Class decorator: register a distiller under the short ``name`` used in ``DISTILL.LOSSES``
    (its config node is ``DISTILL.<NAME>``)."""

    def deco(cls):
        DISTILLER_REGISTRY._do_register(name, cls)
        cls.loss_name = name
        return cls

    return deco
DISTILLER_REGISTRY.__doc__ = """
Registry of distillation losses. Each is an ``nn.Module`` with a ``@configurable`` constructor
whose ``from_config(cls, cfg, student, teacher)`` reads ``cfg.DISTILL.<NAME upper-cased>``, and
``forward(ctx: DistillContext) -> Dict[str, Tensor]`` of unweighted losses named ``loss_kd_*``.
"""


@dataclass
class DistillContext:
    """Everything a distiller may look at for one training batch.

    s_features / t_features: student / teacher backbone outputs, name -> (N, C, H, W); both images
        are padded to the same size, so a level has the same H, W on both sides. The teacher's
        features are computed image by image (``distill.teacher_features``): only the cells of
        :meth:`valid_mask` are meaningful, feature losses compare nothing else.
    gt_instances: per-image ground truth (``gt_boxes`` in input-image pixels, ``gt_classes``).
    image_shape: padded (H, W) of the batch tensor.
    image_sizes: (h, w) of each image before padding (None: every image fills the batch).
    s_stages: the student's box stages (``roi_outputs.BoxStageOutputs``) on its sampled RoIs.
    t_stages: the teacher's outputs on the *same* RoIs, aligned with ``s_stages`` (None unless a
        distiller ``needs_teacher_rois``).
    s_mask / t_mask_logits: the student's mask outputs on its foreground RoIs and the teacher's
        mask logits on the same RoIs (None unless a distiller ``needs_masks``).
    teacher: the frozen teacher model (read-only).
    teacher_box_answer: ``teacher_box_answer(features, k)`` -> ``BoxStageOutputs``: the teacher
        stage(s) paired with student stage k (``DISTILL.ROI.CASCADE_TEACHER_STAGE``) on that
        stage's RoIs, pooled from ``features`` (name -> (N, C_t, H, W)); autograd stays on, so
        CrossKD runs the frozen teacher head on the student's features. ``t_stages`` is this on
        the teacher's features under ``no_grad``.
    teacher_mask_answer: ``teacher_mask_answer(features)`` -> (R_fg, K or 1, M, M): the teacher's
        mask pooler and head at the student's foreground RoIs (``s_mask.proposals``), pooled from
        ``features`` (name -> (N, C_t, H, W)), autograd on (CrossKD's mask term); None unless a
        distiller ``needs_masks`` and the student has a mask head. ``t_mask_logits`` is this on
        the teacher's features under ``no_grad``.
    """

    s_features: Dict[str, torch.Tensor]
    t_features: Dict[str, torch.Tensor]
    gt_instances: List[Instances]
    image_shape: Tuple[int, int]
    s_stages: List = field(default_factory=list)
    t_stages: Optional[List] = None
    s_mask: Optional[object] = None
    t_mask_logits: Optional[torch.Tensor] = None
    teacher: Optional[nn.Module] = None
    teacher_box_answer: Optional[Callable] = None
    teacher_mask_answer: Optional[Callable] = None
    image_sizes: Optional[List[Tuple[int, int]]] = None
    _box_masks: Dict = field(default_factory=dict, repr=False)
    _valid: Dict = field(default_factory=dict, repr=False)

    def valid_mask(self, level: str, stride: int) -> Optional[torch.Tensor]:
        """(N, H, W) bool: the cells of feature ``level`` that cover image content, not batch
        padding (``losses.valid_cells``); None when every cell does. Computed once per level."""
        if self.image_sizes is None:
            return None
        if level not in self._valid:
            feature = self.s_features[level]
            self._valid[level] = valid_cells(self.image_sizes, tuple(feature.shape[-2:]), stride, feature.device)
        return self._valid[level]

    def valid_extents(self, level: str, stride: int) -> Optional[List[Tuple[int, int]]]:
        """(rows, cols) of each image's valid top-left rectangle on ``level`` (``losses.image_extents``),
        from the host-side image sizes: no read-back of :meth:`valid_mask`. None when every cell
        is valid (as :meth:`valid_mask`)."""
        if self.valid_mask(level, stride) is None:
            return None
        return image_extents(self.image_sizes, tuple(self.s_features[level].shape[-2:]), stride)

    def gt_box_masks(self, level: str, stride: int):
        """Ground-truth fg mask and FGD fg/bg weight maps on feature ``level`` (each (N, H, W),
        0 outside :meth:`valid_mask`), computed once per batch and level (``losses.box_masks``,
        vectorised over boxes). The weight maps are float32 whatever the features' dtype (a
        float16 map would lose every box of 65,520 cells or more under AMP)."""
        if level not in self._box_masks:
            feature = self.s_features[level]
            self._box_masks[level] = box_masks(
                [x.gt_boxes for x in self.gt_instances], self.image_shape, tuple(feature.shape[-2:]), stride,
                device=feature.device, valid=self.valid_mask(level, stride),
            )
        return self._box_masks[level]


class Distiller(nn.Module):
    """Base class of registered distillation losses."""

    loss_name = ""  # set by @register_distiller
    in_features: Tuple[str, ...] = ()  # FPN levels it reads from s_features / t_features
    needs_teacher_rois = False  # run the teacher's box head(s) on the student's RoIs
    needs_masks = False  # run the teacher's mask head on the student's foreground RoIs

    def forward(self, ctx: DistillContext) -> Dict[str, torch.Tensor]:
        raise NotImplementedError


def build_distillers(cfg, student: nn.Module, teacher: nn.Module) -> nn.ModuleDict:
    """Instantiate every loss named in ``cfg.DISTILL.LOSSES`` (in that order)."""
    names = list(cfg.DISTILL.LOSSES)
    if len(set(names)) != len(names):
        raise ValueError(f"DISTILL.LOSSES lists a loss twice: {names}")
    known = sorted(DISTILLER_REGISTRY._obj_map)
    distillers = nn.ModuleDict()
    for name in names:
        if name not in known:
            raise KeyError(f"Unknown distillation loss {name!r} in DISTILL.LOSSES; registered: {known}")
        distillers[name] = DISTILLER_REGISTRY.get(name)(cfg, student, teacher)
    return distillers
