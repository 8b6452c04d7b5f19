"""Does an exported model give the PyTorch model's detections? Raw outputs of both runners on the
same resized inputs are compared detection by detection: same count and input size; each
reference detection matched one-to-one to an exported one of the same class with scores within
``score_tol``, boxes within ``box_tol`` pixels (max over coordinates), mask probabilities within
``mask_tol`` (max over pixels). Matching does not rely on the order, so near-equal scores that
swap places do not count as differences.
"""
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch
from detectron2.structures import Instances

BOX_TOL = 0.05  # pixels of the resized input
SCORE_TOL = 1e-3
MASK_TOL = 1e-2


@dataclass
class Comparison:
    """Result of :func:`compare_detections` on one image."""

    image_size: List[int]
    n_reference: int
    n_exported: int
    n_matched: int
    max_box_diff: float
    max_score_diff: float
    max_mask_diff: float
    same_image_size: bool
    error: str = ""  # the exported model failed to run on this image

    @property
    def ok(self) -> bool:
        return not self.error and self.same_image_size and self.n_reference == self.n_exported == self.n_matched

    def describe(self) -> str:
        if self.error:
            return f"the exported model failed to run: {self.error}"
        if self.ok:
            return (f"{self.n_reference} detections equal (max diff: box {self.max_box_diff:.2g} px, "
                    f"score {self.max_score_diff:.2g}, mask {self.max_mask_diff:.2g})")
        if not self.same_image_size:
            return f"input size differs (reference {self.image_size})"
        return (f"{self.n_reference} reference vs {self.n_exported} exported detections, only "
                f"{self.n_matched} equal within tolerance")

    def to_dict(self) -> Dict:
        return {**asdict(self), "ok": self.ok}


def _fields(inst: Instances):
    boxes = inst.pred_boxes.tensor.detach().cpu().double().numpy()
    scores = inst.scores.detach().cpu().double().numpy()
    classes = inst.pred_classes.detach().cpu().numpy()
    masks = inst.pred_masks.detach().cpu().double().flatten(1).numpy() if inst.has("pred_masks") else None
    return boxes, scores, classes, masks


def compare_detections(
    ref: Instances, out: Instances, box_tol: float = BOX_TOL, score_tol: float = SCORE_TOL, mask_tol: float = MASK_TOL
) -> Comparison:
    """Compare raw detections ``ref`` (PyTorch) and ``out`` (exported) of the same input."""
    rb, rs, rc, rm = _fields(ref)
    ob, os_, oc, om = _fields(out)
    box_d = np.abs(rb[:, None, :] - ob[None, :, :]).max(-1) if len(rb) and len(ob) else np.zeros((len(rb), len(ob)))
    score_d = np.abs(rs[:, None] - os_[None, :])
    ok = (rc[:, None] == oc[None, :]) & (box_d <= box_tol) & (score_d <= score_tol)
    used = np.zeros(len(ob), dtype=bool)
    pairs = []
    for i in range(len(rb)):
        candidates = np.flatnonzero(ok[i] & ~used)
        if len(candidates):
            j = candidates[np.argmin(box_d[i, candidates])]
            used[j] = True
            pairs.append((i, j))
    has_masks = rm is not None and om is not None
    mask_d = [float(np.abs(rm[i] - om[j]).max()) if has_masks else 0.0 for i, j in pairs]
    return Comparison(
        image_size=[int(v) for v in ref.image_size], n_reference=len(rb), n_exported=len(ob),
        n_matched=sum(d <= mask_tol for d in mask_d),
        max_box_diff=max((float(box_d[i, j]) for i, j in pairs), default=0.0),
        max_score_diff=max((float(score_d[i, j]) for i, j in pairs), default=0.0),
        max_mask_diff=max(mask_d, default=0.0),
        same_image_size=tuple(int(v) for v in ref.image_size) == tuple(int(v) for v in out.image_size),
    )


def check_runners(
    reference: Callable[[torch.Tensor], Instances], exported: Callable[[torch.Tensor], Instances],
    images: Sequence[torch.Tensor], **tolerances,
) -> List[Comparison]:
    """One :class:`Comparison` per image of ``images`` ((3, h, w) float32 inputs); an exported
    model that raises gives a failed comparison holding the error."""
    comparisons = []
    for image in images:
        ref = reference(image)
        try:
            out = exported(image)
        except Exception as e:  # e.g. an onnxruntime kernel refusing a shape: report, do not crash
            comparisons.append(Comparison([int(v) for v in ref.image_size], len(ref), 0, 0, 0.0, 0.0, 0.0, False,
                                          error=f"{type(e).__name__}: {e}"))
            continue
        comparisons.append(compare_detections(ref, out, **tolerances))
    return comparisons
