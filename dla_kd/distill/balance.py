"""Automatic KD loss weights (``DISTILL.BALANCE``): gradient-norm balancing against the detection
losses, calibrated once over the first iterations and then fixed.

Published KD weights assume one backbone, dataset and loss normalisation. Here, over the first
``ITERS`` training iterations, each KD loss's gradient norm (of the *unweighted* loss) on the
student's shared parameters is measured next to the gradient norm of the detection losses on the
same parameters:

* feature losses (FPN features): the student's backbone (bottom-up + FPN);
* response losses (the distiller ``needs_teacher_rois`` or ``needs_masks``): backbone + ROI heads.

Then each loss's weight is fixed so that ``weight * mean|g_kd| / mean|g_det| = target``
(``DISTILL.BALANCE.TARGET``, or the loss's own ``DISTILL.<NAME>.BALANCE_TARGET`` when >= 0; a
target of 0 switches the loss off). Until then the configured weights apply. The schedule factor
(``DISTILL.<NAME>.SCHEDULE``) multiplies the calibrated weight as it does the published one.

The state (running sums, calibrated weights) lives in buffers, so it is in every checkpoint and
``--resume`` restores it exactly; evaluation and export never read it (the student alone is
deployed). The calibrated weights are logged and written to ``<OUTPUT_DIR>/kd_balance.json``.
With several processes the norms are averaged over all ranks, so every rank uses the same weights.
"""
import logging
import os
from typing import Dict, Iterable, List, Optional, Sequence

import torch
from detectron2.utils import comm
from torch import nn

from ..utils.files import atomic_write_json

logger = logging.getLogger(__name__)

BALANCE_FILE = "kd_balance.json"


def is_response_loss(distiller: nn.Module) -> bool:
    """Response losses act on the ROI heads' outputs; the others on FPN features."""
    return bool(getattr(distiller, "needs_teacher_rois", False) or getattr(distiller, "needs_masks", False))


def loss_gradients(loss: torch.Tensor, params: Sequence[nn.Parameter]) -> List[Optional[torch.Tensor]]:
    """d loss / d p for each of ``params`` (None where the loss does not reach p, and for every p
    of a loss without a graph); the graph is kept."""
    if not loss.requires_grad:
        return [None] * len(params)
    return list(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True))


def grad_norm(loss: torch.Tensor, params: Sequence[nn.Parameter]) -> float:
    """L2 norm of d loss / d params (0 where the loss does not reach a parameter); the graph is kept."""
    total = sum(float(g.detach().pow(2).sum()) for g in loss_gradients(loss, params) if g is not None)
    return total ** 0.5


def _mean_over_ranks(values: List[float]) -> List[float]:
    if comm.get_world_size() == 1:
        return values
    gathered = comm.all_gather(values)
    return [sum(v[i] for v in gathered) / len(gathered) for i in range(len(values))]


class LossBalancer(nn.Module):
    """Calibrates one weight per KD loss (see the module docstring).

    names: the KD losses in ``DISTILL.LOSSES`` order; response: which of them are response losses;
    targets: the gradient-norm ratio each should reach; iters: calibration iterations;
    initial_weights: the configured weights, used until calibration ends.
    """

    def __init__(
        self,
        names: Sequence[str],
        response: Sequence[bool],
        targets: Sequence[float],
        iters: int,
        initial_weights: Sequence[float],
        output_dir: str = "",
    ):
        super().__init__()
        if iters < 1:
            raise ValueError(f"DISTILL.BALANCE.ITERS must be >= 1, got {iters}")
        if any(t < 0 for t in targets):
            raise ValueError(f"DISTILL.BALANCE targets must be >= 0, got {dict(zip(names, targets))}")
        self.names = list(names)
        self.response = list(response)
        self.targets = [float(t) for t in targets]
        self.iters = int(iters)
        self.output_dir = output_dir
        k = len(self.names)
        self.register_buffer("weights", torch.tensor([float(w) for w in initial_weights], dtype=torch.float64))
        # Sums over the calibration iterations of |g_kd| and of |g_det| on the same parameters.
        self.register_buffer("kd_norm_sum", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("det_norm_sum", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("observed", torch.zeros((), dtype=torch.int64))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))

    @classmethod
    def from_config(cls, cfg, distillers: nn.ModuleDict) -> "LossBalancer":
        node = cfg.DISTILL.BALANCE
        names = list(distillers.keys())
        targets = []
        for name in names:
            own = getattr(cfg.DISTILL, name.upper()).BALANCE_TARGET
            targets.append(own if own >= 0 else node.TARGET)
        return cls(
            names,
            [is_response_loss(distillers[n]) for n in names],
            targets,
            node.ITERS,
            [getattr(cfg.DISTILL, n.upper()).WEIGHT for n in names],
            cfg.OUTPUT_DIR,
        )

    def weight(self, name: str) -> float:
        """The current weight of loss ``name`` (configured until calibrated, then calibrated)."""
        return float(self.weights[self.names.index(name)])

    @property
    def calibrating(self) -> bool:
        return not bool(self.calibrated)

    def observe(
        self,
        det_loss: torch.Tensor,
        kd_losses: Dict[str, torch.Tensor],
        backbone_params: Iterable[nn.Parameter],
        head_params: Iterable[nn.Parameter],
    ) -> None:
        """One calibration iteration: measure the gradient norms of ``det_loss`` (the summed
        detection losses) and of each unweighted KD loss; after ``iters`` observations fix the
        weights. The autograd graph is kept for the training step's own backward."""
        if not self.calibrating:
            return
        backbone = [p for p in backbone_params if p.requires_grad]
        heads = [p for p in head_params if p.requires_grad]
        det_norms = {False: grad_norm(det_loss, backbone), True: grad_norm(det_loss, backbone + heads)}
        kd, det = [], []
        for name, response in zip(self.names, self.response):
            loss = kd_losses.get(name)
            kd.append(0.0 if loss is None else grad_norm(loss, backbone + heads if response else backbone))
            det.append(det_norms[response])
        values = _mean_over_ranks(kd + det)
        k = len(self.names)
        self.kd_norm_sum += torch.tensor(values[:k], dtype=torch.float64, device=self.kd_norm_sum.device)
        self.det_norm_sum += torch.tensor(values[k:], dtype=torch.float64, device=self.det_norm_sum.device)
        self.observed += 1
        if int(self.observed) >= self.iters:
            self._calibrate()

    def _calibrate(self) -> None:
        for i, name in enumerate(self.names):
            kd, det = float(self.kd_norm_sum[i]), float(self.det_norm_sum[i])
            if self.targets[i] == 0:
                self.weights[i] = 0.0
            elif kd > 0 and det > 0:
                self.weights[i] = self.targets[i] * det / kd
            else:
                logger.warning(
                    f"DISTILL.BALANCE: loss {name!r} had no gradient on the shared parameters during "
                    f"calibration (|g_kd| sum {kd:.3g}, |g_det| sum {det:.3g}); keeping its configured weight"
                )
        self.calibrated.fill_(True)
        report = self.report()
        lines = "\n".join(
            f"  {r['loss']:<10} target {r['target']:.3g}  |g_kd| {r['mean_kd_grad_norm']:.4g}  "
            f"|g_det| {r['mean_det_grad_norm']:.4g}  -> weight {r['weight']:.4g}"
            for r in report["losses"]
        )
        logger.info(f"DISTILL.BALANCE calibrated the KD weights over {int(self.observed)} iterations:\n{lines}")
        if self.output_dir and comm.is_main_process():
            os.makedirs(self.output_dir, exist_ok=True)
            atomic_write_json(os.path.join(self.output_dir, BALANCE_FILE), report, indent=2)

    def report(self) -> Dict:
        """Calibration summary: per loss its target, mean gradient norms and weight."""
        n = max(1, int(self.observed))
        return {
            "iterations": int(self.observed),
            "calibrated": bool(self.calibrated),
            "losses": [
                {
                    "loss": name,
                    "kind": "response" if self.response[i] else "feature",
                    "target": self.targets[i],
                    "mean_kd_grad_norm": float(self.kd_norm_sum[i]) / n,
                    "mean_det_grad_norm": float(self.det_norm_sum[i]) / n,
                    "weight": float(self.weights[i]),
                }
                for i, name in enumerate(self.names)
            ],
        }
