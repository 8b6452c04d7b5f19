"""How the losses of a distillation run pull on the student: each loss term's gradient on the
student's shared parameters, its norm, and the cosine between terms.

A diagnostic for "why does adding a KD term not help": two terms whose gradients are orthogonal
add independent information, opposed ones (cosine < 0) fight, and a term whose gradient is small
against the detection losses' hardly steers the student. The terms are the detection losses
(every loss not named ``loss_kd_*``, summed) and each distiller of ``DISTILL.LOSSES`` (its
``loss_kd_<name>`` / ``loss_kd_<name>_*`` outputs, summed), with the weights they train with. The
parameter groups are those ``DISTILL.BALANCE`` measures on (``distill/balance.py``): the
backbone (bottom-up + FPN), shared by every term, and the ROI heads, where response losses act.
"""
import itertools
from typing import Dict, List, Sequence

import torch
from torch import nn

from dla_kd.distill.balance import loss_gradients

DETECTION = "detection"


def _base(key: str) -> str:
    return key.split("/")[-1]  # "unlabeled/loss_kd_pkd" (DATASETS.UNLABELED pages) -> "loss_kd_pkd"


def loss_terms(loss_names: Sequence[str], distillers: Sequence[str]) -> Dict[str, List[str]]:
    """term -> the model's loss outputs it sums: ``detection`` and one term per distiller
    (``loss_kd_<name>`` and ``loss_kd_<name>_*``; the longest matching name wins; the
    ``unlabeled/`` part of a run with unlabeled pages counts with its labelled part). An output
    ``loss_kd_*`` of no listed distiller is an error, not silently dropped."""
    terms = {DETECTION: [k for k in loss_names if not _base(k).startswith("loss_kd_")]}
    terms.update({name: [] for name in distillers})
    for key in (k for k in loss_names if _base(k).startswith("loss_kd_")):
        base = _base(key)
        owners = [n for n in distillers if base == f"loss_kd_{n}" or base.startswith(f"loss_kd_{n}_")]
        if not owners:
            raise KeyError(f"loss output {key!r} belongs to none of the distillers {list(distillers)}")
        terms[max(owners, key=len)].append(key)
    return terms


def parameter_groups(student: nn.Module) -> Dict[str, List[nn.Parameter]]:
    """``backbone`` (bottom-up + FPN) and ``roi_heads`` trainable parameters of a Detectron2
    ``GeneralizedRCNN``-like student."""
    return {
        group: [p for p in getattr(student, group).parameters() if p.requires_grad]
        for group in ("backbone", "roi_heads")
    }


def flat_gradient(loss: torch.Tensor, params: Sequence[nn.Parameter]) -> torch.Tensor:
    """d loss / d params as one (N,) vector (zeros where the loss does not reach); graph kept."""
    grads = loss_gradients(loss, params)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).detach().flatten() for g, p in zip(grads, params)])


def interplay(gradients: Dict[str, torch.Tensor]) -> Dict:
    """``{"norm": {term: |g|}, "cosine": {"a|b": cos(g_a, g_b)}}`` for (N,) gradients; the cosine
    with a zero gradient is reported as 0."""
    norms = {term: float(g.norm()) for term, g in gradients.items()}
    cosines = {}
    for a, b in itertools.combinations(gradients, 2):
        denom = norms[a] * norms[b]
        cosines[f"{a}|{b}"] = float(gradients[a] @ gradients[b]) / denom if denom > 0 else 0.0
    return {"norm": norms, "cosine": cosines}


def batch_interplay(losses: Dict[str, torch.Tensor], terms: Dict[str, List[str]],
                    groups: Dict[str, List[nn.Parameter]]) -> Dict[str, Dict]:
    """group -> :func:`interplay` of the terms' gradients, for one batch's loss dict."""
    sums = {term: sum((losses[k] for k in keys), torch.zeros(())) for term, keys in terms.items()}
    return {group: interplay({term: flat_gradient(loss, params) for term, loss in sums.items()})
            for group, params in groups.items()}


def mean_interplay(per_batch: List[Dict[str, Dict]]) -> Dict[str, Dict]:
    """Mean over batches of every norm and cosine of :func:`batch_interplay` results."""
    out = {}
    for group in per_batch[0]:
        out[group] = {
            kind: {k: sum(b[group][kind][k] for b in per_batch) / len(per_batch) for k in per_batch[0][group][kind]}
            for kind in ("norm", "cosine")
        }
    return out
