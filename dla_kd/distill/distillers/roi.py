"""Response-based KD on the ROI box/mask heads. The teacher's heads answer on the student's
own sampled RoIs (``DistillContext.t_stages``), so both classifiers answer the same question.
Cascade students get one loss per stage (``loss_kd_<name>_stage{k}``), as Detectron2 names
its own cascade losses."""
from typing import Dict

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from torch import nn

from ..base import DistillContext, Distiller, register_distiller
from ..losses import (
    box_delta_l2_loss,
    box_giou_loss,
    box_l1_loss,
    kd_loss,
    logit_mse_loss,
    mask_logit_kd_loss,
    roi_weights,
    select_class_deltas,
)


def _gt_classes(proposals) -> torch.Tensor:
    return cat([p.gt_classes for p in proposals], dim=0)


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
    """Logit loss with DeFeat-style weights for positive / negative RoIs."""

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

    def roi_weights(self, s) -> torch.Tensor:
        return roi_weights(_gt_classes(s.proposals), self.num_classes, self.pos_weight, self.neg_weight)


@register_distiller("logit_kd")
class LogitKDDistiller(WeightedLogitDistiller):
    """Vanilla KD (Hinton et al. 2015): KL(softmax(t/T) || softmax(s/T)) * T^2 over K+1 classes."""

    def stage_loss(self, s, t, stage):
        return kd_loss(s.scores, t.scores, self.temperature, weights=self.roi_weights(s))


@register_distiller("logit_mse")
class LogitMSEDistiller(WeightedLogitDistiller):
    """MSE between the K+1 class logits."""

    def stage_loss(self, s, t, stage):
        return logit_mse_loss(s.scores, t.scores, weights=self.roi_weights(s))


@register_distiller("box_kd")
class BoxKDDistiller(RoIStageDistiller):
    """Box-regression KD on foreground RoIs: the teacher's box for a class, decoded on the same
    RoI with the teacher's own box transform, is the target of the student's box for that class.

    LOSS "l2_deltas" / "l1": L2 / L1 in the student's delta space (teacher box re-encoded with
    the student's transform: scale-free, and correct across Cascade stages with different
    regression weights); "giou": GIoU between decoded boxes.
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
        fg = (gt >= 0) & (gt < self.num_classes)
        boxes = _proposal_boxes(s.proposals)[fg]
        classes = t.scores[fg, : self.num_classes].argmax(dim=1) if self.class_choice == "teacher" else gt[fg]
        t_boxes = t.predictor.box2box_transform.apply_deltas(select_class_deltas(t.deltas[fg], classes), boxes)
        s_deltas = select_class_deltas(s.deltas[fg], classes)
        transform = s.predictor.box2box_transform
        if self.loss == "giou":
            return box_giou_loss(transform.apply_deltas(s_deltas, boxes), t_boxes)
        target = transform.get_deltas(boxes, t_boxes)
        if self.loss == "l1":
            return box_l1_loss(s_deltas, target)
        return box_delta_l2_loss(s_deltas, target, classes, self.num_classes)


@register_distiller("mask_kd")
class MaskKDDistiller(Distiller):
    """MSE between student and teacher mask logits of the ground-truth class on the student's
    foreground RoIs."""

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
class CrossKDDistiller(RoIStageDistiller):
    """CrossKD (Wang et al., CVPR 2024) for the ROI head: the student's box-head features go
    through the teacher's frozen box predictor; that prediction is distilled (KD at TEMPERATURE)
    toward the teacher's own prediction on the same RoIs. Gradients reach the student's box head
    through the teacher predictor, whose parameters stay frozen. When the box-head widths differ,
    a trainable linear adapter (per student stage; dropped at export) maps student features to
    the teacher predictor's input width."""

    @configurable
    def __init__(self, *, temperature: float, student_dims, teacher_dim: int):
        super().__init__()
        self.temperature = temperature
        self.adapters = nn.ModuleList(
            nn.Identity() if d == teacher_dim else nn.Linear(d, teacher_dim) for d in student_dims
        )

    @classmethod
    def from_config(cls, cfg, student, teacher):
        t_dims = {p.cls_score.in_features for p in _box_predictors(teacher.roi_heads)}
        if len(t_dims) != 1:
            raise ValueError(f"CrossKD needs one box-predictor input width in the teacher, got {sorted(t_dims)}")
        return {
            "temperature": cfg.DISTILL.CROSSKD.TEMPERATURE,
            "student_dims": [h.output_shape.channels for h in _box_heads(student.roi_heads)],
            "teacher_dim": t_dims.pop(),
        }

    def stage_loss(self, s, t, stage):
        cross_scores, _ = t.predictor(self.adapters[stage](s.box_features))
        return kd_loss(cross_scores, t.scores, self.temperature)


def _box_heads(roi_heads):
    heads = roi_heads.box_head
    return list(heads) if isinstance(heads, torch.nn.ModuleList) else [heads]


def _box_predictors(roi_heads):
    preds = roi_heads.box_predictor
    return list(preds) if isinstance(preds, torch.nn.ModuleList) else [preds]
