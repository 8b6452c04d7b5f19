"""``DistillGeneralizedRCNN``: a student ``GeneralizedRCNN`` trained with KD from a frozen teacher."""
import contextlib
import functools
import math
from typing import Dict, List, NamedTuple, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, build_model
from detectron2.structures import ImageList
from detectron2.utils.events import get_event_storage
from torch import nn

from ...distill.balance import LossBalancer
from ...distill.base import DistillContext, build_distillers
from ...distill.feature_cache import TeacherFeatureCache, build_feature_cache
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
from .unlabeled import (
    UnlabeledSettings,
    batch_parts,
    detection_targets,
    select,
    teacher_detections,
    teacher_inference_levels,
)


class PartLosses(NamedTuple):
    """Unweighted losses of a part of the batch (``unlabeled.BatchPart``) and what the step
    visualises: detection losses, KD losses per distiller, the student's proposals, the targets."""

    detection: Dict[str, torch.Tensor]
    kd: Dict[str, Dict[str, torch.Tensor]]
    proposals: List
    targets: List


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

    Inputs without ``"instances"`` (``DATASETS.UNLABELED`` pages, with ``DISTILL.UNLABELED.RATIO``
    > 0) are distilled with the teacher's detections as their boxes (``unlabeled.py``); their
    losses are computed and logged apart from the labelled images' (``unlabeled/<name>``).
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
        unlabeled: Optional[UnlabeledSettings] = None,
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
        # DISTILL.UNLABELED (None: every input must have "instances").
        self.unlabeled = unlabeled
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
        levels = _teacher_levels_needed(teacher, distillers, cfg.DISTILL.UNLABELED.RATIO > 0)
        padding = _common_padding(student.backbone, teacher.backbone)
        cache = build_feature_cache(cfg, tcfg, teacher.backbone.output_shape(), levels, padding)
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
            "unlabeled": UnlabeledSettings.from_config(cfg),
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

    def _teacher_per_image(self, batched_inputs, t_images) -> List[Dict[str, torch.Tensor]]:
        """Teacher backbone features of ``self.teacher_levels`` for each image alone, name ->
        (C, h, w) at its own padded size (``distill.teacher_features``), live or from the cache."""
        if not self.teacher_levels:
            return [{} for _ in t_images]
        singles = pad_each(t_images, self.padding)
        cached = self.feature_cache.levels if self.feature_cache is not None else []
        levels = sorted(set(self.teacher_levels) | set(cached))  # a miss stores every cached level
        compute = functools.partial(per_image_features, backbone=self.teacher.backbone, levels=levels)
        with torch.no_grad(), teacher_precision(self.device, self.teacher_dtype):
            if self.feature_cache is None:
                return compute(singles)
            return self.feature_cache.features(batched_inputs, singles, compute, self.teacher_levels)

    def _teacher_features(self, batched_inputs, t_images) -> Dict[str, torch.Tensor]:
        """The batch's teacher features, name -> (N, C, H, W) float32 (:meth:`_teacher_per_image`
        pasted top-left into zero maps)."""
        return paste(self._teacher_per_image(batched_inputs, t_images))

    def _teacher_box_answer(self, stages, features: Dict[str, torch.Tensor], k: int):
        """The teacher stage(s) ``self.stage_plan[k]`` on student stage k's RoIs, pooled from
        ``features`` -> ``BoxStageOutputs`` (``DistillContext.teacher_box_answer``)."""
        return teacher_roi_forward(self.teacher.roi_heads, features, [stages[k]], [self.stage_plan[k]])[0]

    def forward(self, batched_inputs: List[Dict]):
        """Training: dict of losses (detection losses + weighted KD losses; those of unlabeled
        inputs prefixed ``unlabeled/``). Inference: exactly the student's output (list of dicts
        with "instances")."""
        if not self.training:
            return self.student(batched_inputs)
        parts = batch_parts(batched_inputs, self.unlabeled, self.detection_losses)
        s_images, t_images = self._preprocess(batched_inputs)
        s_features = self.student.backbone(s_images.tensor)
        t_per_image = self._teacher_per_image(batched_inputs, t_images)
        t_features = paste(t_per_image)
        targets = self._targets(batched_inputs, t_per_image, s_images.image_sizes)
        storage = current_storage()
        results = []
        for part in parts:
            with storage.name_scope(part.name) if storage is not None and part.name else contextlib.nullcontext():
                results.append(self._part_losses(part, s_images, s_features, t_features, targets))
        _visualize_training(self.student, batched_inputs, parts[0].index, results[0])
        return self._weighted_losses(parts, results)

    def _targets(self, batched_inputs, t_per_image, image_sizes) -> List:
        """Per image: its ground truth, or for an unlabeled image the teacher's detections
        (``unlabeled.detection_targets``)."""
        targets = [x["instances"].to(self.device) if "instances" in x else None for x in batched_inputs]
        missing = [i for i, t in enumerate(targets) if t is None]
        if missing:
            mask_on = self.student.roi_heads.mask_on
            with torch.no_grad(), teacher_precision(self.device, self.teacher_dtype):
                detections = teacher_detections(
                    self.teacher, [t_per_image[i] for i in missing], [image_sizes[i] for i in missing],
                    self.unlabeled.score_thresh, mask_on,
                )
            for i, found in zip(missing, detections):
                targets[i] = detection_targets(found, mask_on)
        return targets

    def _part_losses(self, part, s_images: ImageList, s_features, t_features, targets) -> PartLosses:
        """Unweighted detection and KD losses of the images of ``part`` (``unlabeled.BatchPart``),
        with ``targets`` (ground truth or teacher detections) as their boxes."""
        images, s_feats, t_feats = select(part, s_images, s_features, t_features)
        gt = targets if part.index is None else [targets[i] for i in part.index]
        proposals, proposal_losses = self.student.proposal_generator(images, s_feats, gt)
        detector_losses, stages, mask_out = student_roi_forward(self.student.roi_heads, s_feats, proposals, gt)
        ctx = DistillContext(
            s_features=s_feats,
            t_features=t_feats,
            gt_instances=gt,
            image_shape=tuple(images.tensor.shape[-2:]),
            image_sizes=list(images.image_sizes),
            s_stages=stages,
            s_mask=mask_out,
            teacher=self.teacher,
            teacher_box_answer=functools.partial(self._teacher_box_answer, stages),
        )
        if self.needs_masks and mask_out is not None:
            ctx.teacher_mask_answer = functools.partial(mask_logits, self.teacher.roi_heads, instances=mask_out.proposals)
        with torch.no_grad(), teacher_precision(self.device, self.teacher_dtype):
            if self.needs_teacher_rois:
                ctx.t_stages = [_to_float(ctx.teacher_box_answer(t_feats, k)) for k in range(len(stages))]
            if ctx.teacher_mask_answer is not None:
                ctx.t_mask_logits = ctx.teacher_mask_answer(t_feats).float()
        kd_losses = {name: distiller(ctx) for name, distiller in self.distillers.items()}
        return PartLosses({**proposal_losses, **detector_losses}, kd_losses, proposals, gt)

    def _weighted_losses(self, parts, results: List[PartLosses]) -> Dict[str, torch.Tensor]:
        """Detection losses x the part's ``det_scale``; KD losses x their weight (configured or
        balanced, times the schedule) x the part's share of the batch; names prefixed per part."""
        if self.balancer is not None and self.balancer.calibrating:
            self.balancer.observe(
                sum(part.det_reference * sum(r.detection.values()) for part, r in zip(parts, results) if part.det_reference),
                {
                    name: sum(part.share * sum(r.kd[name].values()) for part, r in zip(parts, results))
                    for name in self.distillers if results[0].kd[name]
                },
                self.student.backbone.parameters(),
                self.student.roi_heads.parameters(),
            )
        it = current_iter()
        storage = current_storage()
        weights = {}
        for name in self.distillers:
            base = self.loss_weights[name] if self.balancer is None else self.balancer.weight(name)
            weights[name] = base * self.schedules[name](it)
            if storage is not None:
                storage.put_scalar(f"kd_weight/{name}", weights[name], smoothing_hint=False)
        # Detection losses always stay in the graph (x0 in "distill only" mode and on unlabeled
        # images without pseudo labels) so that every trainable parameter gets a gradient each
        # step: DDP needs no find_unused_parameters.
        losses = {}
        for part, result in zip(parts, results):
            losses.update({part.prefix + k: v * part.det_scale for k, v in result.detection.items()})
        for part, result in zip(parts, results):
            for name, values in result.kd.items():
                for loss_name, value in values.items():
                    key = part.prefix + loss_name
                    if key in losses:
                        raise KeyError(f"Distiller {name!r} returns {loss_name!r}, a name another loss already uses")
                    losses[key] = value * (weights[name] * part.share)
        return losses


def _teacher_levels_needed(teacher, distillers, detects_unlabeled: bool = False) -> List[str]:
    """Teacher feature levels read in a step: the levels of the feature losses (each its own
    ``DISTILL.<NAME>.IN_FEATURES``), plus the teacher heads' inputs when they answer on the
    student's RoIs or detect on unlabeled pages (``detects_unlabeled``)."""
    levels = set().union(*(d.in_features for d in distillers.values()))
    if detects_unlabeled:
        levels |= teacher_inference_levels(teacher)
    if any(d.needs_teacher_rois for d in distillers.values()):
        levels |= set(teacher.roi_heads.box_in_features)
    if any(d.needs_masks for d in distillers.values()):
        levels |= set(teacher.roi_heads.mask_in_features)
    return sorted(levels)


def _visualize_training(student: GeneralizedRCNN, batched_inputs, index, first: PartLosses) -> None:
    """``VIS_PERIOD`` as ``GeneralizedRCNN.forward`` honours it: every VIS_PERIOD iterations
    the student's ``visualize_training`` puts one image's GT boxes (on an unlabeled image: the
    teacher's) and RPN proposals into the event storage. ``first``: the losses of the batch's
    first part, whose images are ``index`` (None: all)."""
    if student.vis_period > 0:
        storage = get_event_storage()
        if storage.iter % student.vis_period == 0:
            images = index or range(len(batched_inputs))
            inputs = [dict(batched_inputs[i], instances=t.to("cpu")) for i, t in zip(images, first.targets)]
            student.visualize_training(inputs, first.proposals)


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
