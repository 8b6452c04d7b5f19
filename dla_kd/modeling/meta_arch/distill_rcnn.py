"""``DistillGeneralizedRCNN``: a student ``GeneralizedRCNN`` trained with KD from a frozen teacher."""
import math
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, build_model
from detectron2.structures import ImageList
from torch import nn

from ...distill.base import DistillContext, build_distillers
from ...distill.feature_cache import TeacherFeatureCache, cache_signature, check_deterministic_inputs
from ...distill.schedule import LossWeightSchedule
from ...utils.events import current_iter, current_storage
from .roi_outputs import (
    check_supported_roi_heads,
    mask_logits,
    num_box_stages,
    student_roi_forward,
    teacher_roi_forward,
    teacher_stage_plan,
)
from .student import (
    build_student_cfg,
    check_compatible,
    copy_teacher_heads,
    init_from_teacher,
    teacher_feature_width,
    uses_simkd,
)
from .teacher import build_teacher, load_teacher_cfg, teacher_precision

@META_ARCH_REGISTRY.register()
class DistillGeneralizedRCNN(nn.Module):
    """Student detector + frozen teacher + distillation losses.

    * ``student``: an ordinary ``GeneralizedRCNN`` (Mask R-CNN or Cascade) built from the
      student config (``student_cfg``, exported with it); in eval mode this module *is* the
      student: the teacher is not run.
    * ``teacher``: held outside the module tree, so it is not in ``state_dict()``,
      ``parameters()``, the optimizer or DDP; no parameter requires grad, it stays in eval mode
      through ``.train()``, and it runs once per batch under ``torch.no_grad()``.
    * ``distillers``: the losses of ``DISTILL.LOSSES`` (their adapters train with the student).

    Each model sees the batch normalised with its own ``PIXEL_MEAN/STD`` and channel order; both
    are padded to the same size so feature levels align.
    """

    plain_checkpoint_prefix = "student."  # plain detector checkpoints load into the student

    @configurable
    def __init__(
        self,
        *,
        student: GeneralizedRCNN,
        teacher: GeneralizedRCNN,
        distillers: nn.ModuleDict,
        loss_weights: Dict[str, float],
        schedules: Dict[str, LossWeightSchedule],
        detection_losses: bool = True,
        flip_teacher_channels: bool = False,
        cascade_teacher_stage: str = "last",
        teacher_dtype: str = "float32",
        student_cfg=None,
        teacher_cfg=None,
        feature_cache: Optional[TeacherFeatureCache] = None,
    ):
        super().__init__()
        self.student = student
        object.__setattr__(self, "teacher", teacher)  # not a submodule (see class docstring)
        self.distillers = distillers
        self.loss_weights = dict(loss_weights)
        self.schedules = dict(schedules)
        self.detection_losses = detection_losses
        self.flip_teacher_channels = flip_teacher_channels
        self.teacher_dtype = teacher_dtype
        self.student_cfg = student_cfg
        self.teacher_cfg = teacher_cfg
        self.feature_cache = feature_cache
        check_supported_roi_heads(student.roi_heads)
        check_supported_roi_heads(teacher.roi_heads)
        self.stage_plan = teacher_stage_plan(
            num_box_stages(student.roi_heads), num_box_stages(teacher.roi_heads), cascade_teacher_stage
        )
        self.needs_teacher_rois = any(d.needs_teacher_rois for d in distillers.values())
        self.needs_masks = any(d.needs_masks for d in distillers.values())
        self.padding = _common_padding(student.backbone, teacher.backbone)

    @classmethod
    def from_config(cls, cfg):
        tcfg = load_teacher_cfg(cfg)
        check_compatible(cfg, tcfg)
        teacher = build_teacher(cfg, tcfg)
        width = teacher_feature_width(teacher.backbone) if uses_simkd(cfg) else 0
        scfg = build_student_cfg(cfg, tcfg, width)
        student = build_model(scfg)
        if uses_simkd(cfg):
            copy_teacher_heads(student, teacher, trainable=cfg.DISTILL.SIMKD.TRAIN_HEADS)
        if cfg.DISTILL.INIT_FROM_TEACHER.ENABLED:
            init_from_teacher(student, teacher, list(cfg.DISTILL.INIT_FROM_TEACHER.PREFIXES))
        distillers = build_distillers(cfg, student, teacher)
        nodes = {name: cfg.DISTILL[name.upper()] for name in distillers}
        cache = None
        if cfg.DISTILL.TEACHER.FEATURE_CACHE.DIR:
            check_deterministic_inputs(cfg)
            levels = _teacher_levels_needed(cfg, teacher, distillers)
            cache = TeacherFeatureCache(
                cfg.DISTILL.TEACHER.FEATURE_CACHE.DIR, levels, cache_signature(cfg, tcfg, levels),
                cfg.DISTILL.TEACHER.FEATURE_CACHE.DTYPE,
            )
        return {
            "student": student,
            "teacher": teacher,
            "distillers": distillers,
            "loss_weights": {name: node.WEIGHT for name, node in nodes.items()},
            "schedules": {
                name: LossWeightSchedule.from_config(node.SCHEDULE, cfg.SOLVER.MAX_ITER) for name, node in nodes.items()
            },
            "detection_losses": cfg.DISTILL.DETECTION_LOSSES,
            "flip_teacher_channels": cfg.INPUT.FORMAT != tcfg.INPUT.FORMAT,
            "cascade_teacher_stage": cfg.DISTILL.ROI.CASCADE_TEACHER_STAGE,
            "teacher_dtype": cfg.DISTILL.TEACHER.DTYPE,
            "student_cfg": scfg,
            "teacher_cfg": tcfg,
            "feature_cache": cache,
        }

    @property
    def device(self):
        return self.student.device

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    def _apply(self, fn, *args, **kwargs):
        # .to()/.cuda()/.float() reach the teacher although it is not a submodule.
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)
        return self

    def _preprocess(self, batched_inputs: List[Dict]):
        """Student ImageList and the teacher's normalised images (own mean/std and channel
        order); ``self.padding`` pads both to the same size so feature levels align."""
        images = [self.student._move_to_current_device(x["image"]) for x in batched_inputs]
        s_images = [(x - self.student.pixel_mean) / self.student.pixel_std for x in images]
        t_images = [x.flip(0) if self.flip_teacher_channels else x for x in images]
        t_images = [(x - self.teacher.pixel_mean) / self.teacher.pixel_std for x in t_images]
        return ImageList.from_tensors(s_images, padding_constraints=self.padding), t_images

    def _teacher_features(self, batched_inputs, t_images, s_features) -> Dict[str, torch.Tensor]:
        """Teacher backbone features, name -> (N, C, H, W) float32, live or from the cache."""
        with torch.no_grad(), teacher_precision(self.device, self.teacher_dtype):
            if self.feature_cache is None:
                batch = ImageList.from_tensors(t_images, padding_constraints=self.padding)
                return {k: v.float() for k, v in self.teacher.backbone(batch.tensor).items()}
            singles = [ImageList.from_tensors([x], padding_constraints=self.padding).tensor[0] for x in t_images]
            shapes = {k: tuple(s_features[k].shape[-2:]) for k in self.feature_cache.levels}
            return self.feature_cache.features(batched_inputs, singles, shapes, self.teacher.backbone)

    def forward(self, batched_inputs: List[Dict]):
        """Training: dict of losses (detection losses + weighted KD losses).
        Inference: exactly the student's output (list of dicts with "instances")."""
        if not self.training:
            return self.student(batched_inputs)
        if "instances" not in batched_inputs[0]:
            raise ValueError("Distillation training needs ground-truth 'instances' in every input")
        s_images, t_images = self._preprocess(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        precision = teacher_precision(self.device, self.teacher_dtype)
        s_features = self.student.backbone(s_images.tensor)
        t_features = self._teacher_features(batched_inputs, t_images, s_features)
        proposals, proposal_losses = self.student.proposal_generator(s_images, s_features, gt_instances)
        detector_losses, stages, mask_out = student_roi_forward(
            self.student.roi_heads, s_features, proposals, gt_instances
        )
        ctx = DistillContext(
            s_features=s_features,
            t_features=t_features,
            gt_instances=gt_instances,
            image_shape=tuple(s_images.tensor.shape[-2:]),
            s_stages=stages,
            s_mask=mask_out,
            teacher=self.teacher,
        )
        with torch.no_grad(), precision:
            if self.needs_teacher_rois:
                ctx.t_stages = [
                    _to_float(s) for s in teacher_roi_forward(self.teacher.roi_heads, t_features, stages, self.stage_plan)
                ]
            if self.needs_masks and mask_out is not None:
                ctx.t_mask_logits = mask_logits(self.teacher.roi_heads, t_features, mask_out.proposals).float()

        # Detection losses always stay in the graph (x0 in "distill only" mode) so that every
        # trainable parameter gets a gradient each step: DDP needs no find_unused_parameters.
        det_scale = 1.0 if self.detection_losses else 0.0
        losses = {k: v * det_scale for k, v in {**proposal_losses, **detector_losses}.items()}
        it = current_iter()
        storage = current_storage()
        for name, distiller in self.distillers.items():
            weight = self.loss_weights[name] * self.schedules[name](it)
            if storage is not None:
                storage.put_scalar(f"kd_weight/{name}", weight, smoothing_hint=False)
            for loss_name, value in distiller(ctx).items():
                if loss_name in losses:
                    raise KeyError(f"Distiller {name!r} returns {loss_name!r}, a name another loss already uses")
                losses[loss_name] = value * weight
        return losses


def _teacher_levels_needed(cfg, teacher, distillers) -> List[str]:
    """Teacher feature levels read in a step: the distilled levels, plus the teacher heads'
    inputs when they answer on the student's RoIs."""
    levels = set(cfg.DISTILL.FEATURE.IN_FEATURES)
    if any(d.needs_teacher_rois for d in distillers.values()):
        levels |= set(teacher.roi_heads.box_in_features)
    if any(d.needs_masks for d in distillers.values()):
        levels |= set(teacher.roi_heads.mask_in_features)
    return sorted(levels)


def _to_float(stage):
    stage.scores, stage.deltas, stage.box_features = stage.scores.float(), stage.deltas.float(), stage.box_features.float()
    return stage


def _common_padding(*backbones) -> Dict[str, int]:
    """Padding that satisfies every backbone: lcm of size divisibilities, max square size."""
    div, square = 1, 0
    for b in backbones:
        constraints = dict(b.padding_constraints or {})
        d = constraints.get("size_divisibility", b.size_divisibility) or 1
        div = div * d // math.gcd(div, d)
        square = max(square, constraints.get("square_size", 0))
    return {"size_divisibility": div, "square_size": square} if square else {"size_divisibility": div}
