"""Running ROI heads so that their intermediate outputs are available for distillation.

Detectron2's ``StandardROIHeads``/``CascadeROIHeads`` compute their sampled proposals, box
features and logits inside ``_forward_box`` and only return losses. For ROI-level KD we need
those tensors, and we need the *teacher's* heads to answer on exactly the student's proposals.
The student side re-traces Detectron2's training forward step by step (same calls, same losses);
the teacher side pools the teacher's own features at the student's boxes.

Shapes: R = number of sampled RoIs in the batch, K = number of classes, D = box-head width,
M = mask resolution.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.modeling.roi_heads import CascadeROIHeads, StandardROIHeads
from detectron2.modeling.roi_heads.cascade_rcnn import _ScaleGradient
from detectron2.modeling.roi_heads.mask_head import BaseMaskRCNNHead, mask_rcnn_loss
from detectron2.modeling.roi_heads.roi_heads import select_foreground_proposals
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage


@dataclass
class BoxStageOutputs:
    """One box stage on a set of RoIs.

    proposals: per-image RoIs (student: sampled, with ``gt_classes``/``gt_boxes``), R in total.
    box_features: (R, D) box-head output (the predictor's input).
    scores: (R, K+1) class logits, background last.
    deltas: (R, 4K) class-specific or (R, 4) class-agnostic box deltas.
    predictor: the ``FastRCNNOutputLayers`` that produced them (box decoding, class count).
    """

    proposals: List[Instances]
    box_features: torch.Tensor
    scores: torch.Tensor
    deltas: torch.Tensor
    predictor: torch.nn.Module


@dataclass
class MaskOutputs:
    """Mask head on the foreground RoIs: ``proposals`` (per image) and ``logits`` (R_fg, K or 1, M, M)."""

    proposals: List[Instances]
    logits: torch.Tensor


def _check_mask_head(mask_head) -> None:
    if not isinstance(mask_head, BaseMaskRCNNHead):
        raise NotImplementedError(
            f"Distillation supports mask heads derived from BaseMaskRCNNHead, got {type(mask_head).__name__}"
        )


def check_supported_roi_heads(roi_heads) -> None:
    """Fail at build time for ROI heads the distillation forward cannot trace."""
    if _runner_for(roi_heads) is None:
        raise NotImplementedError(
            f"Distillation supports StandardROIHeads and CascadeROIHeads (and subclasses), got {type(roi_heads).__name__}"
        )
    if getattr(roi_heads, "keypoint_on", False):
        raise NotImplementedError("Distillation of keypoint heads is not supported")
    if roi_heads.mask_on:
        _check_mask_head(roi_heads.mask_head)


def num_box_stages(roi_heads) -> int:
    return getattr(roi_heads, "num_cascade_stages", 1)


def _box_head(roi_heads, stage: int):
    if isinstance(roi_heads, CascadeROIHeads):
        return roi_heads.box_head[stage], roi_heads.box_predictor[stage]
    return roi_heads.box_head, roi_heads.box_predictor


def _forward_mask(roi_heads, features: Dict[str, torch.Tensor], proposals: List[Instances]):
    """Training mask branch of ``StandardROIHeads._forward_mask`` that also returns the logits."""
    fg_proposals, _ = select_foreground_proposals(proposals, roi_heads.num_classes)
    logits = mask_logits(roi_heads, features, fg_proposals)
    head = roi_heads.mask_head
    loss = mask_rcnn_loss(logits, fg_proposals, head.vis_period) * head.loss_weight
    return {"loss_mask": loss}, MaskOutputs(fg_proposals, logits)


def mask_logits(roi_heads, features: Dict[str, torch.Tensor], instances: List[Instances]) -> torch.Tensor:
    """Mask logits (R, K or 1, M, M) of ``roi_heads`` at the ``proposal_boxes`` of ``instances``."""
    feats = [features[f] for f in roi_heads.mask_in_features]
    pooled = roi_heads.mask_pooler(feats, [x.proposal_boxes for x in instances])
    return roi_heads.mask_head.layers(pooled)


def _run_standard(roi_heads: StandardROIHeads, features, proposals, targets):
    """Box stage of ``StandardROIHeads._forward_box`` in training, keeping its tensors."""
    feats = [features[f] for f in roi_heads.box_in_features]
    box_features = roi_heads.box_head(roi_heads.box_pooler(feats, [x.proposal_boxes for x in proposals]))
    scores, deltas = roi_heads.box_predictor(box_features)
    losses = roi_heads.box_predictor.losses((scores, deltas), proposals)
    stage = BoxStageOutputs(proposals, box_features, scores, deltas, roi_heads.box_predictor)
    if roi_heads.train_on_pred_boxes:
        with torch.no_grad():
            pred = roi_heads.box_predictor.predict_boxes_for_gt_classes((scores, deltas), proposals)
        # The mask branch then trains on predicted boxes, as in Detectron2; keep the stage's own RoIs.
        proposals = [_with_boxes(p, b) for p, b in zip(proposals, pred)]
    return losses, [stage], proposals


def _with_boxes(proposals: Instances, boxes: torch.Tensor) -> Instances:
    out = Instances(proposals.image_size, **proposals.get_fields())
    out.proposal_boxes = Boxes(boxes)
    return out


def _run_cascade(roi_heads: CascadeROIHeads, features, proposals, targets):
    """``CascadeROIHeads._forward_box`` in training, keeping every stage's tensors."""
    feats = [features[f] for f in roi_heads.box_in_features]
    image_sizes = [x.image_size for x in proposals]
    stages, stage_proposals, prev_boxes = [], proposals, None
    for k in range(roi_heads.num_cascade_stages):
        if k > 0:
            stage_proposals = roi_heads._create_proposals_from_boxes(prev_boxes, image_sizes)
            stage_proposals = roi_heads._match_and_label_boxes(stage_proposals, k, targets)
        pooled = roi_heads.box_pooler(feats, [x.proposal_boxes for x in stage_proposals])
        pooled = _ScaleGradient.apply(pooled, 1.0 / roi_heads.num_cascade_stages)
        box_features = roi_heads.box_head[k](pooled)
        scores, deltas = roi_heads.box_predictor[k](box_features)
        prev_boxes = roi_heads.box_predictor[k].predict_boxes((scores, deltas), stage_proposals)
        stages.append(BoxStageOutputs(stage_proposals, box_features, scores, deltas, roi_heads.box_predictor[k]))
    losses = {}
    storage = get_event_storage()
    outer = getattr(storage, "_current_prefix", "")  # nested in an enclosing scope ("unlabeled/")
    for k, s in enumerate(stages):
        with storage.name_scope(f"{outer}stage{k}"):
            stage_losses = s.predictor.losses((s.scores, s.deltas), s.proposals)
        losses.update({f"{name}_stage{k}": v for name, v in stage_losses.items()})
    return losses, stages, proposals


# Most specific class first: CascadeROIHeads subclasses StandardROIHeads.
_RUNNERS: List[Tuple[type, Callable]] = [(CascadeROIHeads, _run_cascade), (StandardROIHeads, _run_standard)]


def _runner_for(roi_heads) -> Optional[Callable]:
    for cls, runner in _RUNNERS:
        if isinstance(roi_heads, cls):
            return runner
    return None


def student_roi_forward(
    roi_heads, features: Dict[str, torch.Tensor], proposals: List[Instances], targets: List[Instances]
) -> Tuple[Dict[str, torch.Tensor], List[BoxStageOutputs], Optional[MaskOutputs]]:
    """Training forward of the student's ROI heads (same losses as ``roi_heads(...)``).

    Returns:
        losses: the detection losses (``loss_cls``, ``loss_box_reg``[``_stage{k}``], ``loss_mask``).
        stages: one :class:`BoxStageOutputs` per box stage.
        mask: :class:`MaskOutputs` of the foreground RoIs, or None without a mask head.
    """
    proposals = roi_heads.label_and_sample_proposals(proposals, targets)
    losses, stages, mask_proposals = _runner_for(roi_heads)(roi_heads, features, proposals, targets)
    mask = None
    if roi_heads.mask_on:
        mask_losses, mask = _forward_mask(roi_heads, features, mask_proposals)
        losses.update(mask_losses)
    return losses, stages, mask


def teacher_box_outputs(roi_heads, features: Dict[str, torch.Tensor], proposals: List[Instances], stage: int):
    """The teacher's box stage ``stage`` on the given (student) proposals -> BoxStageOutputs."""
    feats = [features[f] for f in roi_heads.box_in_features]
    head, predictor = _box_head(roi_heads, stage)
    box_features = head(roi_heads.box_pooler(feats, [x.proposal_boxes for x in proposals]))
    scores, deltas = predictor(box_features)
    return BoxStageOutputs(proposals, box_features, scores, deltas, predictor)


def teacher_stage_plan(num_student_stages: int, num_teacher_stages: int, choice: str) -> List[List[int]]:
    """Which teacher stage(s) answer each student stage.

    Equal stage counts pair stage k with stage k; a single-stage teacher answers every student
    stage; a Cascade teacher answering a single-stage student uses ``choice``: "last",
    "average" (all stages, combined by :func:`average_stage_scores` in the caller) or a stage
    index.
    """
    if num_teacher_stages == num_student_stages:
        return [[k] for k in range(num_student_stages)]
    if num_teacher_stages == 1:
        return [[0] for _ in range(num_student_stages)]
    if num_student_stages != 1:
        raise ValueError(
            f"Cannot pair a {num_student_stages}-stage student with a {num_teacher_stages}-stage teacher"
        )
    if choice == "last":
        return [[num_teacher_stages - 1]]
    if choice == "average":
        return [list(range(num_teacher_stages))]
    try:
        idx = int(choice)
    except ValueError:
        idx = -1
    if not 0 <= idx < num_teacher_stages:
        raise ValueError(
            f"DISTILL.ROI.CASCADE_TEACHER_STAGE must be 'last', 'average' or 0..{num_teacher_stages - 1}, got {choice!r}"
        )
    return [[idx]]


def average_stage_scores(scores: List[torch.Tensor]) -> torch.Tensor:
    """The Cascade ensemble of Detectron2's inference (``CascadeROIHeads._forward_box``: the mean
    of the stages' softmax probabilities p_bar), as logits: log(p_bar) ((R, K+1) each -> (R, K+1),
    float32). softmax(log p_bar) = p_bar, so KD at temperature T targets p_bar^(1/T) / Z; p_bar
    is clamped at the smallest normal float before the log (no -inf)."""
    probs = torch.stack([F.softmax(s.float(), dim=1) for s in scores]).mean(0)
    return probs.clamp(min=torch.finfo(probs.dtype).tiny).log()


def teacher_roi_forward(
    roi_heads, features: Dict[str, torch.Tensor], student_stages: List[BoxStageOutputs], plan: List[List[int]]
) -> List[BoxStageOutputs]:
    """Teacher outputs aligned with ``student_stages``: for student stage k, the teacher stages
    ``plan[k]`` run on the student's stage-k proposals (pooled from ``features``: the teacher's,
    or the student's for CrossKD). Several stages: scores = :func:`average_stage_scores` (log of
    the mean probability); deltas, box features and predictor come from the last stage (each
    Cascade stage has its own box-regression weights, so deltas of different stages must not be
    averaged)."""
    outputs = []
    for s_stage, t_stages in zip(student_stages, plan):
        runs = [teacher_box_outputs(roi_heads, features, s_stage.proposals, k) for k in t_stages]
        if len(runs) == 1:
            outputs.append(runs[0])
            continue
        outputs.append(
            BoxStageOutputs(
                s_stage.proposals,
                runs[-1].box_features,
                average_stage_scores([r.scores for r in runs]),
                runs[-1].deltas,
                runs[-1].predictor,
            )
        )
    return outputs
