"""Response-based KD on the ROI box/mask heads. The teacher's heads answer on the student's
own sampled RoIs (``DistillContext.t_stages``), so both classifiers answer the same question.
Cascade students get one loss per stage (``loss_kd_<name>_stage{k}``), as Detectron2 names
its own cascade losses."""
import logging
from typing import Dict

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.roi_heads.cascade_rcnn import _ScaleGradient
from torch import nn

from ..base import DistillContext, Distiller, register_distiller
from ..losses import (
    box_delta_l2_loss,
    box_giou_loss,
    box_l1_loss,
    build_adapter,
    crosskd_box_loss,
    kd_loss,
    kd_quality_focal_loss,
    logit_mse_loss,
    mask_logit_kd_loss,
    select_class_deltas,
)

logger = logging.getLogger(__name__)


def _gt_classes(proposals) -> torch.Tensor:
    return cat([p.gt_classes for p in proposals], dim=0)


def _fg_mask(gt_classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(R,) bool: foreground RoIs (Detectron2 labels background ``num_classes``)."""
    return (gt_classes >= 0) & (gt_classes < num_classes)


def _proposal_boxes(proposals) -> torch.Tensor:
    return cat([p.proposal_boxes.tensor for p in proposals], dim=0)


class RoIStageDistiller(Distiller):
    """A loss computed per box stage from (student stage, teacher answer on the same RoIs)."""

    needs_teacher_rois = True

    def stage_loss(self, s, t, stage: int) -> torch.Tensor:
        """s, t: ``roi_outputs.BoxStageOutputs`` of student stage ``stage`` and the teacher's
        answer on the same R RoIs -> scalar."""
        raise NotImplementedError

    def forward(self, ctx: DistillContext) -> Dict[str, torch.Tensor]:
        n = len(ctx.s_stages)
        return {
            f"loss_kd_{self.loss_name}" + (f"_stage{k}" if n > 1 else ""): self.stage_loss(s, t, k)
            for k, (s, t) in enumerate(zip(ctx.s_stages, ctx.t_stages))
        }


class WeightedLogitDistiller(RoIStageDistiller):
    """Logit loss over the RoIs with POS_WEIGHT / NEG_WEIGHT for foreground / background RoIs
    (``losses.decoupled_mean``): 1 / 1 is the plain mean over all RoIs; any other pair is DeFeat's
    decoupled head KD (ggjy/DeFeat.pytorch, mmdet/apis/train.py, ``KLDivergenceLoss`` with a mask
    and the "KL-decouple" branch), each group divided by its own RoI count. DeFeat distils on the
    teacher's sampled RoIs; here the student's."""

    @configurable
    def __init__(self, *, num_classes: int, pos_weight: float = 1.0, neg_weight: float = 1.0, temperature: float = 1.0):
        super().__init__()
        self.num_classes = num_classes
        self.pos_weight, self.neg_weight, self.temperature = pos_weight, neg_weight, temperature

    @classmethod
    def from_config(cls, cfg, student, teacher):
        node = cfg.DISTILL[cls.loss_name.upper()]
        args = {"num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES, "pos_weight": node.POS_WEIGHT, "neg_weight": node.NEG_WEIGHT}
        if "TEMPERATURE" in node:
            args["temperature"] = node.TEMPERATURE
        return args

    def groups(self, s):
        """Keyword arguments of the RoI reduction: foreground mask and the two weights."""
        fg = _fg_mask(_gt_classes(s.proposals), self.num_classes)
        return {"pos_mask": fg, "pos_weight": self.pos_weight, "neg_weight": self.neg_weight}


@register_distiller("logit_kd")
class LogitKDDistiller(WeightedLogitDistiller):
    """Vanilla KD (Hinton et al. 2015): KL(softmax(t/T) || softmax(s/T)) * T^2 over K+1 classes."""

    def stage_loss(self, s, t, stage):
        return kd_loss(s.scores, t.scores, self.temperature, **self.groups(s))


@register_distiller("logit_mse")
class LogitMSEDistiller(WeightedLogitDistiller):
    """MSE between the K+1 class logits."""

    def stage_loss(self, s, t, stage):
        return logit_mse_loss(s.scores, t.scores, **self.groups(s))


@register_distiller("box_kd")
class BoxKDDistiller(RoIStageDistiller):
    """Box-regression KD on foreground RoIs (ours; no reference implementation): the teacher's box
    for a class, decoded on the same RoI with the teacher's own box transform, is the target of
    the student's box for that class.

    LOSS "l1" / "l2_deltas": L1 / squared error on box *deltas*, in the student's delta space
    (teacher box re-encoded with the student's transform, as Detectron2's own L1 box loss
    compares deltas: scale-free, and correct across Cascade stages with different regression
    weights); "giou": GIoU between decoded boxes (pixels). All three are normalised as
    Detectron2's ``box_reg_loss``: summed over foreground RoIs, divided by all sampled RoIs.
    CLASS "gt": ground-truth class; "teacher": the teacher's top foreground class;
    "agnostic": class-agnostic heads (either side may be agnostic for "gt"/"teacher").
    """

    LOSSES = ("l2_deltas", "l1", "giou")
    CLASSES = ("gt", "teacher", "agnostic")

    @configurable
    def __init__(self, *, num_classes: int, loss: str, class_choice: str):
        super().__init__()
        if loss not in self.LOSSES:
            raise ValueError(f"DISTILL.BOX_KD.LOSS must be one of {self.LOSSES}, got {loss!r}")
        if class_choice not in self.CLASSES:
            raise ValueError(f"DISTILL.BOX_KD.CLASS must be one of {self.CLASSES}, got {class_choice!r}")
        self.num_classes, self.loss, self.class_choice = num_classes, loss, class_choice

    @classmethod
    def from_config(cls, cfg, student, teacher):
        node = cfg.DISTILL.BOX_KD
        if node.CLASS == "agnostic":
            widths = {p.bbox_pred.out_features for m in (student, teacher) for p in _box_predictors(m.roi_heads)}
            if widths != {4}:
                raise ValueError(
                    "DISTILL.BOX_KD.CLASS 'agnostic' needs class-agnostic box regression in student and teacher "
                    "(MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG True)"
                )
        return {"num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES, "loss": node.LOSS, "class_choice": node.CLASS}

    def stage_loss(self, s, t, stage):
        gt = _gt_classes(s.proposals)
        fg = _fg_mask(gt, self.num_classes)
        boxes = _proposal_boxes(s.proposals)
        if self.class_choice == "teacher":
            classes = t.scores[:, : self.num_classes].argmax(dim=1)
        else:  # background rows get class 0: computed, then left out by ``fg``
            classes = torch.where(fg, gt, torch.zeros_like(gt))
        t_boxes = t.predictor.box2box_transform.apply_deltas(select_class_deltas(t.deltas, classes), boxes)
        s_deltas = select_class_deltas(s.deltas, classes)
        transform = s.predictor.box2box_transform
        if self.loss == "giou":
            return box_giou_loss(transform.apply_deltas(s_deltas, boxes), t_boxes, fg)
        target = transform.get_deltas(boxes, t_boxes)
        if self.loss == "l1":
            return box_l1_loss(s_deltas, target, fg)
        return box_delta_l2_loss(s_deltas, target, classes, self.num_classes, fg)


@register_distiller("mask_kd")
class MaskKDDistiller(Distiller):
    """MSE between student and teacher mask logits of the ground-truth class on the student's
    foreground RoIs (``losses.mask_logit_kd_loss``). Ours: we found no paper or reference code
    of this form (DistilDoc has no mask KD; CrossKD's Mask R-CNN variant, jbwang1997/CrossKD
    branch faster-rcnn ``mask_loss_with_kd``, is a different loss: the teacher's mask head on the
    student's features, a quality-focal KD over all class channels)."""

    needs_masks = True

    @configurable
    def __init__(self):
        super().__init__()

    @classmethod
    def from_config(cls, cfg, student, teacher):
        return {}

    def forward(self, ctx):
        classes = _gt_classes(ctx.s_mask.proposals)
        return {f"loss_kd_{self.loss_name}": mask_logit_kd_loss(ctx.s_mask.logits, ctx.t_mask_logits, classes)}


@register_distiller("crosskd")
class CrossKDDistiller(Distiller):
    """CrossKD (Wang et al., CVPR 2024), two-stage form of the authors' code: jbwang1997/CrossKD,
    branch faster-rcnn, mmdet/models/detectors/crosskd_two_stage.py (``bbox_loss_with_kd``,
    ``mask_loss_with_kd``) with configs/crosskd/crosskd_r18_faster-rcnn_r50_fpn_1x_coco.py and,
    for Mask R-CNN, crosskd_r18_mask-rcnn_r50_fpn_1x_coco.py.

    The student's FPN features (the teacher's box and mask levels, through a trainable 1x1-conv
    adapter per level where the FPN widths differ; identity otherwise, as in the reference) go
    through the teacher's frozen heads on the student's RoIs: the "cross-head" predictions c.
    With t the teacher's own answer on the same RoIs (box: the same teacher stage(s), see
    ``DISTILL.ROI.CASCADE_TEACHER_STAGE``), per student box stage:

    * ``loss_kd_crosskd_cls``: CLS_WEIGHT * kd_loss(c.scores, t.scores, TEMPERATURE) (KL summed
      over the K+1 classes, x T^2, mean over all RoIs; reference: T 3, loss_weight 0.5).
    * ``loss_kd_crosskd_reg``: REG_WEIGHT * crosskd_box_loss(c.deltas, t.deltas, t.scores)
      (L1 on the teacher's top-class deltas weighted by its probability; reference: weight 1).

    and, when student and teacher both have a mask head (the reference runs it whenever the
    student has one) and MASK_WEIGHT > 0:

    * ``loss_kd_crosskd_mask``: MASK_WEIGHT * kd_quality_focal_loss(c.mask, t.mask, R) -- the
      teacher's mask pooler + head on the student's foreground RoIs, every class channel and mask
      cell, summed and divided by R, the number of sampled RoIs of the stage the mask head runs
      on (the reference's ``avg_factor=num_rois``; reference: KDQualityFocalLoss beta 1, weight 1).

    Gradients reach the adapters and the student's backbone/FPN through the frozen teacher heads
    (no teacher parameter requires grad); the student's own heads train on their detection
    losses only, as in the reference. Cascade students (``_stage{k}`` suffix): stage k runs on
    stage k's RoIs, and its gradient into the student features is scaled by 1 / #stages, as
    Detectron2's ``CascadeROIHeads`` scales each stage's pooled features; the mask term runs on
    the last stage's foreground RoIs, as Detectron2's mask head does.
    """

    needs_teacher_rois = True

    @configurable
    def __init__(self, *, channels: Dict[str, tuple], temperature: float, cls_weight: float, reg_weight: float,
                 mask_weight: float = 0.0):
        """channels: level -> (student width, teacher width) for the teacher's box (and, with
        the mask term, mask) levels. mask_weight: 0 switches the mask term off."""
        super().__init__()
        self.adapters = nn.ModuleDict({n: build_adapter(cs, ct) for n, (cs, ct) in channels.items()})
        self.temperature, self.cls_weight, self.reg_weight = temperature, cls_weight, reg_weight
        self.mask_weight = mask_weight
        self.needs_masks = mask_weight > 0

    @classmethod
    def from_config(cls, cfg, student, teacher):
        node = cfg.DISTILL.CROSSKD
        mask_weight = node.MASK_WEIGHT if student.roi_heads.mask_on else 0.0
        if mask_weight > 0 and not teacher.roi_heads.mask_on:
            logger.warning(
                "DISTILL.CROSSKD.MASK_WEIGHT %s: the student has a mask head, the teacher none; "
                "CrossKD's mask term is off (box terms only)", node.MASK_WEIGHT,
            )
            mask_weight = 0.0
        levels = list(teacher.roi_heads.box_in_features)
        if mask_weight > 0:
            levels += [n for n in teacher.roi_heads.mask_in_features if n not in levels]
        s_shapes, t_shapes = student.backbone.output_shape(), teacher.backbone.output_shape()
        channels = {}
        for n in levels:
            if n not in s_shapes or s_shapes[n].stride != t_shapes[n].stride:
                raise ValueError(
                    f"CrossKD pools the student's {n!r} with the teacher's ROI poolers: the student backbone must "
                    f"output it at stride {t_shapes[n].stride} (it has {sorted(s_shapes)})"
                )
            channels[n] = (s_shapes[n].channels, t_shapes[n].channels)
        return {"channels": channels, "temperature": node.TEMPERATURE, "cls_weight": node.CLS_WEIGHT,
                "reg_weight": node.REG_WEIGHT, "mask_weight": mask_weight}

    def forward(self, ctx: DistillContext) -> Dict[str, torch.Tensor]:
        feats = {n: adapter(ctx.s_features[n]) for n, adapter in self.adapters.items()}
        n_stages = len(ctx.s_stages)
        losses = {}
        for k, t in enumerate(ctx.t_stages):
            if n_stages > 1:
                feats_k = {n: _ScaleGradient.apply(f, 1.0 / n_stages) for n, f in feats.items()}
            else:
                feats_k = feats
            c = ctx.teacher_box_answer(feats_k, k)
            suffix = f"_stage{k}" if n_stages > 1 else ""
            losses[f"loss_kd_{self.loss_name}_cls{suffix}"] = self.cls_weight * kd_loss(c.scores, t.scores, self.temperature)
            losses[f"loss_kd_{self.loss_name}_reg{suffix}"] = self.reg_weight * crosskd_box_loss(c.deltas, t.deltas, t.scores)
        if self.mask_weight > 0 and ctx.teacher_mask_answer is not None:
            num_rois = ctx.s_stages[-1].scores.shape[0]
            c_mask = ctx.teacher_mask_answer(feats)
            losses[f"loss_kd_{self.loss_name}_mask"] = self.mask_weight * kd_quality_focal_loss(
                c_mask, ctx.t_mask_logits, num_rois
            )
        return losses


def _box_predictors(roi_heads):
    preds = roi_heads.box_predictor
    return list(preds) if isinstance(preds, torch.nn.ModuleList) else [preds]
