"""``DistillGeneralizedRCNN``: a student ``GeneralizedRCNN`` trained with KD from a frozen teacher."""
import functools
import math
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, build_model
from detectron2.structures import ImageList
from detectron2.utils.events import get_event_storage
from torch import nn

from ...distill.balance import LossBalancer
from ...distill.base import DistillContext, build_distillers
from ...distill.feature_cache import TeacherFeatureCache, cache_signature, check_deterministic_inputs
from ...distill.schedule import LossWeightSchedule
from ...distill.teacher_features import pad_each, paste, per_image_features
from ...utils.events import current_iter, current_storage
from ...utils.rng import forked_rng
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
    teacher_feature_width,
    uses_simkd,
)
from .teacher import build_teacher, load_teacher_cfg, teacher_precision
from .teacher_init import TeacherInit

@META_ARCH_REGISTRY.register()
class DistillGeneralizedRCNN(nn.Module):
    """Student detector + frozen teacher + distillation losses.

    * ``student``: an ordinary ``GeneralizedRCNN`` (Mask R-CNN or Cascade) built from the
      student config (``student_cfg``, exported with it); in eval mode this module *is* the
      student: the teacher is not run.
    * ``teacher``: held outside the module tree, so it is not in ``state_dict()``,
      ``parameters()``, the optimizer or DDP; no parameter requires grad, it stays in eval mode
      through ``.train()``, and it runs once per batch under ``torch.no_grad()``, in
      ``DISTILL.TEACHER.DTYPE`` whatever autocast the trainer runs the student in.
    * ``distillers``: the losses of ``DISTILL.LOSSES`` (their adapters train with the student).

    Each model sees the batch normalised with its own ``PIXEL_MEAN/STD`` and channel order; both
    use the same padding constraints so feature levels align. The teacher's backbone runs image by
    image (``distill.teacher_features``): its targets do not depend on the batch, and the feature
    cache holds exactly what a live forward gives. Teacher, adapters and sanity check draw from
    forked random streams: the student, its data and its losses are those of the plain run with
    the same seed.
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
        teacher_init: Optional[TeacherInit] = None,
        teacher_levels: Optional[Sequence[str]] = None,
        balancer: Optional[LossBalancer] = None,
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
        self.teacher_init = teacher_init or TeacherInit()
        # DISTILL.BALANCE: calibrated KD weights (buffers, so checkpoints and --resume keep them).
        self.balancer = balancer
        check_supported_roi_heads(student.roi_heads)
        check_supported_roi_heads(teacher.roi_heads)
        self.stage_plan = teacher_stage_plan(
            num_box_stages(student.roi_heads), num_box_stages(teacher.roi_heads), cascade_teacher_stage
        )
        self.needs_teacher_rois = any(d.needs_teacher_rois for d in distillers.values())
        self.needs_masks = any(d.needs_masks for d in distillers.values())
        self.padding = _common_padding(student.backbone, teacher.backbone)
        # Teacher backbone levels a step reads (default: all).
        self.teacher_levels = list(teacher.backbone.output_shape() if teacher_levels is None else teacher_levels)

    @classmethod
    def from_config(cls, cfg):
        tcfg = load_teacher_cfg(cfg)
        check_compatible(cfg, tcfg)
        with forked_rng():  # the student is initialised from the RNG state of the plain run
            teacher = build_teacher(cfg, tcfg)
        width = teacher_feature_width(teacher.backbone) if uses_simkd(cfg) else 0
        scfg = build_student_cfg(cfg, tcfg, width)
        student = build_model(scfg)
        teacher_init = TeacherInit.from_config(cfg)
        teacher_init(student, teacher)
        with forked_rng():  # ... and so are the data loader's seed and the first steps
            distillers = build_distillers(cfg, student, teacher)
        nodes = {name: cfg.DISTILL[name.upper()] for name in distillers}
        cache = None
        levels = _teacher_levels_needed(cfg, teacher, distillers)
        if cfg.DISTILL.TEACHER.FEATURE_CACHE.DIR:
            check_deterministic_inputs(cfg)
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
            "teacher_init": teacher_init,
            "teacher_levels": levels,
            "balancer": LossBalancer.from_config(cfg, distillers) if cfg.DISTILL.BALANCE.ENABLED else None,
        }

    def after_plain_weights(self, loaded_keys) -> List[str]:
        """Apply the teacher copies again after a plain checkpoint filled ``loaded_keys`` (this
        module's names): MODEL.WEIGHTS first, then the teacher (see ``teacher_init``)."""
        loaded = [k[len(self.plain_checkpoint_prefix):] for k in loaded_keys if k.startswith(self.plain_checkpoint_prefix)]
        return self.teacher_init.after_plain_weights(self.student, self.teacher, loaded)

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

    def _teacher_features(self, batched_inputs, t_images) -> Dict[str, torch.Tensor]:
        """Teacher backbone features of ``self.teacher_levels``, name -> (N, C, H, W) float32,
        computed image by image (``distill.teacher_features``), live or from the cache."""
        if not self.teacher_levels:
            return {}
        singles = pad_each(t_images, self.padding)
        compute = functools.partial(per_image_features, backbone=self.teacher.backbone, levels=self.teacher_levels)
        with torch.no_grad(), teacher_precision(self.device, self.teacher_dtype):
            if self.feature_cache is None:
                return paste(compute(singles))
            return paste(self.feature_cache.features(batched_inputs, singles, compute))

    def _teacher_box_answer(self, stages, features: Dict[str, torch.Tensor], k: int):
        """The teacher stage(s) ``self.stage_plan[k]`` on student stage k's RoIs, pooled from
        ``features`` -> ``BoxStageOutputs`` (``DistillContext.teacher_box_answer``)."""
        return teacher_roi_forward(self.teacher.roi_heads, features, [stages[k]], [self.stage_plan[k]])[0]

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
        t_features = self._teacher_features(batched_inputs, t_images)
        proposals, proposal_losses = self.student.proposal_generator(s_images, s_features, gt_instances)
        detector_losses, stages, mask_out = student_roi_forward(
            self.student.roi_heads, s_features, proposals, gt_instances
        )
        _visualize_training(self.student, batched_inputs, proposals)
        ctx = DistillContext(
            s_features=s_features,
            t_features=t_features,
            gt_instances=gt_instances,
            image_shape=tuple(s_images.tensor.shape[-2:]),
            image_sizes=list(s_images.image_sizes),
            s_stages=stages,
            s_mask=mask_out,
            teacher=self.teacher,
            teacher_box_answer=functools.partial(self._teacher_box_answer, stages),
        )
        with torch.no_grad(), precision:
            if self.needs_teacher_rois:
                ctx.t_stages = [_to_float(ctx.teacher_box_answer(t_features, k)) for k in range(len(stages))]
            if self.needs_masks and mask_out is not None:
                ctx.t_mask_logits = mask_logits(self.teacher.roi_heads, t_features, mask_out.proposals).float()

        # Detection losses always stay in the graph (x0 in "distill only" mode) so that every
        # trainable parameter gets a gradient each step: DDP needs no find_unused_parameters.
        det_scale = 1.0 if self.detection_losses else 0.0
        losses = {k: v * det_scale for k, v in {**proposal_losses, **detector_losses}.items()}
        it = current_iter()
        storage = current_storage()
        kd_losses = {name: distiller(ctx) for name, distiller in self.distillers.items()}
        if self.balancer is not None and self.balancer.calibrating:
            self.balancer.observe(
                sum({**proposal_losses, **detector_losses}.values()),
                {name: sum(values.values()) for name, values in kd_losses.items() if values},
                self.student.backbone.parameters(),
                self.student.roi_heads.parameters(),
            )
        for name, values in kd_losses.items():
            base = self.loss_weights[name] if self.balancer is None else self.balancer.weight(name)
            weight = base * self.schedules[name](it)
            if storage is not None:
                storage.put_scalar(f"kd_weight/{name}", weight, smoothing_hint=False)
            for loss_name, value in values.items():
                if loss_name in losses:
                    raise KeyError(f"Distiller {name!r} returns {loss_name!r}, a name another loss already uses")
                losses[loss_name] = value * weight
        return losses


def _teacher_levels_needed(cfg, teacher, distillers) -> List[str]:
    """Teacher feature levels read in a step: the levels of the feature losses (each its own
    ``DISTILL.<NAME>.IN_FEATURES``), plus the teacher heads' inputs when they answer on the
    student's RoIs."""
    levels = set().union(*(d.in_features for d in distillers.values()))
    if any(d.needs_teacher_rois for d in distillers.values()):
        levels |= set(teacher.roi_heads.box_in_features)
    if any(d.needs_masks for d in distillers.values()):
        levels |= set(teacher.roi_heads.mask_in_features)
    return sorted(levels)


def _visualize_training(student: GeneralizedRCNN, batched_inputs, proposals) -> None:
    """``VIS_PERIOD`` as ``GeneralizedRCNN.forward`` honours it: every VIS_PERIOD iterations
    the student's ``visualize_training`` puts one image's GT boxes and RPN proposals into the
    event storage."""
    if student.vis_period > 0:
        storage = get_event_storage()
        if storage.iter % student.vis_period == 0:
            student.visualize_training(batched_inputs, proposals)


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
