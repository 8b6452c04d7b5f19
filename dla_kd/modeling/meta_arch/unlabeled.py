"""Distillation on pages without annotations (``DATASETS.UNLABELED``, ``DISTILL.UNLABELED``).

A training batch is split into parts (:func:`batch_parts`): its labelled images (inputs with
``"instances"``) and its unlabeled ones. Each part goes through the student's RPN and ROI heads
and every KD loss on its own, so its losses are logged on their own: ``<name>`` for the labelled
part, ``unlabeled/<name>`` for the other (its event-storage scalars under ``unlabeled/`` too).

On an unlabeled image the targets are the teacher's own detections (:func:`teacher_detections`:
its RPN and ROI heads at inference, on its features of that image alone) scoring at least
``DISTILL.UNLABELED.SCORE_THRESH`` (:func:`detection_targets`). They are the boxes of the losses
that need boxes (FGD/DeFeat masks, the RoI sampling of ROI KD) and, with
``DISTILL.UNLABELED.PSEUDO_LABELS``, the student's detection targets (pseudo ground truth).
Without pseudo labels the unlabeled part's detection losses are multiplied by 0: they stay in
the graph so that every trainable parameter gets a gradient each step, also in a batch of
unlabeled images only.

Weights: a part's KD losses are multiplied by its share of the batch's images (the two add up to
the mean over the batch; a batch of labelled images gives exactly the losses of a run without
unlabeled pages); the labelled part's detection losses are the student's own (x0 with
``DISTILL.DETECTION_LOSSES False``), the unlabeled part's x ``PSEUDO_LABEL_WEIGHT`` (or 0).
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

import torch
from detectron2.layers.mask_ops import paste_masks_in_image
from detectron2.structures import BitMasks, ImageList, Instances, PolygonMasks

UNLABELED = "unlabeled"


@dataclass
class UnlabeledSettings:
    """``DISTILL.UNLABELED`` as the model uses it (None on the model when RATIO is 0)."""

    score_thresh: float = 0.5
    pseudo_labels: bool = False
    pseudo_label_weight: float = 1.0

    @classmethod
    def from_config(cls, cfg) -> Optional["UnlabeledSettings"]:
        node = cfg.DISTILL.UNLABELED
        if node.RATIO <= 0:
            return None
        if cfg.DISTILL.BALANCE.ENABLED and node.RATIO >= 1 and not node.PSEUDO_LABELS:
            raise ValueError(
                "DISTILL.BALANCE measures KD gradients against the detection losses' gradients, which a run on "
                "unlabeled pages only (DISTILL.UNLABELED.RATIO 1) without PSEUDO_LABELS does not have"
            )
        return cls(node.SCORE_THRESH, node.PSEUDO_LABELS, node.PSEUDO_LABEL_WEIGHT)


@dataclass
class BatchPart:
    """Images of a batch whose losses are computed together.

    name: "" (labelled) or "unlabeled": the prefix of its loss names.
    index: its images' positions in the batch; None when it is the whole batch.
    det_scale: multiplies its detection losses.
    det_reference: scale of its detection losses in ``DISTILL.BALANCE``'s reference (1 for
        labelled images, also in distill-only mode; ``det_scale`` for unlabeled ones).
    share: its share of the batch's images; multiplies its KD losses.
    """

    name: str
    index: Optional[List[int]]
    det_scale: float
    det_reference: float
    share: float

    @property
    def prefix(self) -> str:
        return f"{self.name}/" if self.name else ""


def batch_parts(batched_inputs: Sequence[Dict], settings: Optional[UnlabeledSettings],
                detection_losses: bool) -> List[BatchPart]:
    """The labelled part (inputs with ``"instances"``) first, then the unlabeled one; a part
    without images is left out."""
    labelled = [i for i, x in enumerate(batched_inputs) if "instances" in x]
    unlabeled = [i for i, x in enumerate(batched_inputs) if "instances" not in x]
    if unlabeled and settings is None:
        raise ValueError(
            "Distillation training needs ground-truth 'instances' in every input; images without them come from "
            "DATASETS.UNLABELED and need DISTILL.UNLABELED.RATIO > 0"
        )
    n, parts = len(batched_inputs), []
    if labelled:
        det = 1.0 if detection_losses else 0.0
        parts.append(BatchPart("", labelled if unlabeled else None, det, 1.0, len(labelled) / n))
    if unlabeled:
        det = settings.pseudo_label_weight if settings.pseudo_labels else 0.0
        parts.append(BatchPart(UNLABELED, unlabeled if labelled else None, det, det, len(unlabeled) / n))
    return parts


def select(part: BatchPart, images: ImageList, features: Dict[str, torch.Tensor], *more: Dict[str, torch.Tensor]
           ) -> tuple:
    """The part's images (``ImageList``, same padded size) and its rows of each feature dict
    (name -> (N, C, H, W) -> (n, C, H, W)); unchanged when the part is the whole batch."""
    if part.index is None:
        return (images, features, *more)
    idx = torch.as_tensor(part.index, device=images.tensor.device)
    sub_images = ImageList(images.tensor[idx], [images.image_sizes[i] for i in part.index])
    return (sub_images, *({k: v[idx] for k, v in d.items()} for d in (features, *more)))


def teacher_inference_levels(teacher) -> Set[str]:
    """Teacher backbone levels its RPN and ROI heads read at inference."""
    heads = teacher.roi_heads
    levels = set(teacher.proposal_generator.in_features) | set(heads.box_in_features)
    return levels | (set(heads.mask_in_features) if heads.mask_on else set())


def teacher_detections(teacher, features: Sequence[Dict[str, torch.Tensor]], image_sizes: Sequence[Tuple[int, int]],
                       score_thresh: float, with_masks: bool) -> List[Instances]:
    """The teacher's inference on each image alone (RPN and box head with its own test settings),
    detections scoring at least ``score_thresh`` kept, then its mask head on those only
    (``with_masks`` and a teacher with masks).

    features: per image, name -> (C, h_l, w_l) at the image's own padded size
    (``distill.teacher_features.per_image_features``, or the feature cache); image_sizes: (h, w)
    of each image. Returns ``Instances`` with ``pred_boxes`` (input-image pixels), ``scores``,
    ``pred_classes`` and, with masks, ``pred_masks`` (R, 1, M, M) probabilities. Call under
    ``torch.no_grad()``."""
    heads, out = teacher.roi_heads, []
    for feats, size in zip(features, image_sizes):
        batch = {k: v[None].float() for k, v in feats.items()}
        some = next(iter(batch.values()))
        images = ImageList(some.new_zeros((1, 0, 0, 0)), [tuple(size)])  # the heads read image_sizes only
        proposals, _ = teacher.proposal_generator(images, batch, None)
        found = heads._forward_box(batch, proposals)[0]  # what roi_heads(...) runs before the mask head
        found = found[found.scores >= score_thresh]
        if with_masks and heads.mask_on:
            found = heads.forward_with_given_boxes(batch, [found])[0]
        out.append(found)
    return out


def _target_masks(detections: Instances):
    """Masks of the detections: the teacher's mask probabilities pasted into the image and
    binarised at 0.5 (``BitMasks``, (R, H, W)), or the boxes themselves without a mask head."""
    if detections.has("pred_masks"):
        masks = paste_masks_in_image(detections.pred_masks[:, 0], detections.pred_boxes, detections.image_size, 0.5)
        return BitMasks(masks)
    boxes = detections.pred_boxes.tensor.tolist()
    return PolygonMasks([[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in boxes])


def detection_targets(detections: Instances, mask_on: bool) -> Instances:
    """Ground-truth-style ``Instances`` (``gt_boxes``, ``gt_classes``, ``gt_masks`` when
    ``mask_on``) of the teacher's detections (:func:`teacher_detections`)."""
    targets = Instances(detections.image_size)
    targets.gt_boxes = detections.pred_boxes
    targets.gt_classes = detections.pred_classes
    if mask_on:
        targets.gt_masks = _target_masks(detections)
    return targets
