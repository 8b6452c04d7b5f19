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

Under AMP (``SOLVER.AMP.ENABLED``) the backward of a KD loss runs through float16 activations, where
gradients below 6e-5 (float16's smallest normal; MGD's reach about 6e-7) flush towards zero. So
each norm is measured as GradScaler measures the step: ``norm(d (S * loss) / d params) / S``, with
S the trainer's ``GradScaler`` scale (:func:`attach_grad_scaler`), 2^16 (GradScaler's initial
scale) under autocast without one, and 1 without autocast (float32 gradients need no scaling and
keep their exact values). An observation with a non-finite norm (a scaled gradient that
overflowed, or a NaN) is skipped with a warning and the scale of the losses concerned halved for
the next one, so it never fixes a weight; calibration then takes one more iteration.

Host syncs: the weights, the calibrated flag and the running sums have host-side copies (refreshed
when a checkpoint is loaded), so a step after calibration reads nothing back from the device. A
calibration iteration reads its 2k norms back once (one ``tolist``), as it must to average them
over the ranks, check them and log the weights.
"""
import logging
import math
import os
from typing import Dict, Iterable, List, Optional, Sequence

import torch
from detectron2.utils import comm
from torch import nn

from ..utils.events import current_iter
from ..utils.files import atomic_write_json

logger = logging.getLogger(__name__)

BALANCE_FILE = "kd_balance.json"

# GradScaler's default initial scale (torch.cuda.amp.GradScaler(init_scale=2.0 ** 16)), the scale
# Detectron2's AMPTrainer starts from: the gradient scale under autocast when no scaler is attached.
DEFAULT_AMP_SCALE = 2.0**16


def is_response_loss(distiller: nn.Module) -> bool:
    """Response losses act on the ROI heads' outputs; the others on FPN features."""
    return bool(getattr(distiller, "needs_teacher_rois", False) or getattr(distiller, "needs_masks", False))


def loss_gradients(loss: torch.Tensor, params: Sequence[nn.Parameter]) -> List[Optional[torch.Tensor]]:
    """d loss / d p for each of ``params`` (None where the loss does not reach p, and for every p
    of a loss without a graph); the graph is kept."""
    if not loss.requires_grad:
        return [None] * len(params)
    return list(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True))


def scaled_grad_norm(loss: torch.Tensor, params: Sequence[nn.Parameter], scale: float = 1.0) -> torch.Tensor:
    """``norm(d (scale * loss) / d params) / scale``: the L2 norm of d loss / d params measured on
    gradients scaled by ``scale`` (as GradScaler scales the step, so that float16 gradients under
    autocast do not underflow). 0-dim float64 tensor on the parameters' device, read nothing back
    (0 where the loss reaches no parameter; inf / nan when the scaled gradients overflowed). The
    graph is kept."""
    device = params[0].device if len(params) else loss.device
    grads = loss_gradients(loss * scale if scale != 1.0 else loss, params)
    squares = [g.detach().double().pow(2).sum() for g in grads if g is not None]
    if not squares:
        return torch.zeros((), dtype=torch.float64, device=device)
    return torch.stack(squares).sum().sqrt() / scale


def grad_norm(loss: torch.Tensor, params: Sequence[nn.Parameter], scale: float = 1.0) -> float:
    """:func:`scaled_grad_norm` as a Python float (reads it back: a device sync on a GPU)."""
    return float(scaled_grad_norm(loss, params, scale))


def autocast_enabled(device: torch.device) -> bool:
    """Whether autocast is on for ``device``'s type in this thread."""
    if device.type == "cuda":
        return torch.is_autocast_enabled()
    if device.type == "cpu":
        return torch.is_autocast_cpu_enabled()
    return False


def attach_grad_scaler(model: nn.Module, scaler) -> None:
    """Let ``DISTILL.BALANCE`` measure gradients at the trainer's GradScaler scale
    (``AMPTrainer.grad_scaler``). model: the trainer's model (DDP-wrapped or not); nothing happens
    without a balancer or without a scaler."""
    model = getattr(model, "module", model)
    balancer = getattr(model, "balancer", None)
    if isinstance(balancer, LossBalancer) and scaler is not None:
        balancer.grad_scaler = scaler


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
    ``grad_scaler``: the trainer's GradScaler, if any (:func:`attach_grad_scaler`).
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
        self.grad_scaler = None
        k = len(self.names)
        self.register_buffer("weights", torch.tensor([float(w) for w in initial_weights], dtype=torch.float64))
        # Sums over the calibration iterations of |g_kd| and of |g_det| on the same parameters.
        self.register_buffer("kd_norm_sum", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("det_norm_sum", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("observed", torch.zeros((), dtype=torch.int64))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        # Halving factors of the gradient scale after non-finite observations (host only).
        self._kd_backoff = [1.0] * k
        self._det_backoff = 1.0
        self._read_buffers()

    def _read_buffers(self) -> None:
        """Host-side copies of the buffers (read when built and when a checkpoint is loaded)."""
        self._weights = [float(w) for w in self.weights.tolist()]
        self._kd_sum = [float(v) for v in self.kd_norm_sum.tolist()]
        self._det_sum = [float(v) for v in self.det_norm_sum.tolist()]
        self._observed = int(self.observed)
        self._calibrated = bool(self.calibrated)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._read_buffers()

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
        """The current weight of loss ``name`` (configured until calibrated, then calibrated);
        a host-side value, no device read."""
        return self._weights[self.names.index(name)]

    @property
    def calibrating(self) -> bool:
        return not self._calibrated

    def gradient_scale(self, device: torch.device) -> float:
        """S of the module docstring: the attached GradScaler's scale when it is enabled (read
        from the device, in calibration iterations only), else 2^16 under autocast, else 1."""
        scaler = self.grad_scaler
        if scaler is not None and scaler.is_enabled():
            return float(scaler.get_scale())
        return DEFAULT_AMP_SCALE if autocast_enabled(device) else 1.0

    def observe(
        self,
        det_loss: torch.Tensor,
        kd_losses: Dict[str, torch.Tensor],
        backbone_params: Iterable[nn.Parameter],
        head_params: Iterable[nn.Parameter],
    ) -> None:
        """One calibration iteration: measure the gradient norms of ``det_loss`` (the summed
        detection losses) and of each unweighted KD loss at the gradient scale S; after ``iters``
        finite observations fix the weights. A non-finite norm (on any rank) skips the
        observation. The autograd graph is kept for the training step's own backward."""
        if not self.calibrating:
            return
        backbone = [p for p in backbone_params if p.requires_grad]
        heads = [p for p in head_params if p.requires_grad]
        device = backbone[0].device if backbone else det_loss.device
        scale = self.gradient_scale(device)
        det_scale = scale * self._det_backoff
        det_norms = {
            False: scaled_grad_norm(det_loss, backbone, det_scale),
            True: scaled_grad_norm(det_loss, backbone + heads, det_scale),
        }
        norms = []
        for i, (name, response) in enumerate(zip(self.names, self.response)):
            loss = kd_losses.get(name)
            if loss is None:
                norms.append(torch.zeros((), dtype=torch.float64, device=device))
            else:
                norms.append(scaled_grad_norm(loss, backbone + heads if response else backbone, scale * self._kd_backoff[i]))
        norms += [det_norms[response] for response in self.response]
        # The one read-back of a calibration iteration: all 2k norms at once.
        values = _mean_over_ranks(torch.stack([n.to(device) for n in norms]).tolist())
        k = len(self.names)
        bad = [i for i in range(k) if not math.isfinite(values[i])]
        bad_det = not all(math.isfinite(v) for v in values[k:])
        if bad or bad_det:
            self._skip([self.names[i] for i in bad], bad_det, scale)
            for i in bad:
                self._kd_backoff[i] /= 2.0
            if bad_det:
                self._det_backoff /= 2.0
            return
        self._kd_sum = [a + b for a, b in zip(self._kd_sum, values[:k])]
        self._det_sum = [a + b for a, b in zip(self._det_sum, values[k:])]
        self._observed += 1
        self._write_buffers()
        if self._observed >= self.iters:
            self._calibrate()

    def _skip(self, names: List[str], det: bool, scale: float) -> None:
        what = ", ".join([repr(n) for n in names] + (["the detection losses"] if det else []))
        logger.warning(
            f"DISTILL.BALANCE: non-finite gradient norm of {what} at iteration {current_iter(default=0)} "
            f"(gradient scale {scale:g}); this observation is skipped and the scale of those losses halved "
            f"({self._observed} of {self.iters} calibration iterations done)"
        )

    def _write_buffers(self) -> None:
        """Host state -> buffers (what checkpoints hold); device writes only, nothing read back."""
        self.weights.copy_(torch.tensor(self._weights, dtype=torch.float64))
        self.kd_norm_sum.copy_(torch.tensor(self._kd_sum, dtype=torch.float64))
        self.det_norm_sum.copy_(torch.tensor(self._det_sum, dtype=torch.float64))
        self.observed.fill_(self._observed)
        self.calibrated.fill_(self._calibrated)

    def _calibrate(self) -> None:
        for i, name in enumerate(self.names):
            kd, det = self._kd_sum[i], self._det_sum[i]
            if self.targets[i] == 0:
                self._weights[i] = 0.0
            elif kd > 0 and det > 0:
                self._weights[i] = self.targets[i] * det / kd
            else:
                logger.warning(
                    f"DISTILL.BALANCE: loss {name!r} had no gradient on the shared parameters during "
                    f"calibration (|g_kd| sum {kd:.3g}, |g_det| sum {det:.3g}); keeping its configured weight"
                )
        self._calibrated = True
        self._write_buffers()
        report = self.report()
        lines = "\n".join(
            f"  {r['loss']:<10} target {r['target']:.3g}  |g_kd| {r['mean_kd_grad_norm']:.4g}  "
            f"|g_det| {r['mean_det_grad_norm']:.4g}  -> weight {r['weight']:.4g}"
            for r in report["losses"]
        )
        logger.info(f"DISTILL.BALANCE calibrated the KD weights over {self._observed} iterations:\n{lines}")
        if self.output_dir and comm.is_main_process():
            os.makedirs(self.output_dir, exist_ok=True)
            atomic_write_json(os.path.join(self.output_dir, BALANCE_FILE), report, indent=2)

    def report(self) -> Dict:
        """Calibration summary: per loss its target, mean gradient norms and weight."""
        n = max(1, self._observed)
        return {
            "iterations": self._observed,
            "calibrated": self._calibrated,
            "losses": [
                {
                    "loss": name,
                    "kind": "response" if self.response[i] else "feature",
                    "target": self.targets[i],
                    "mean_kd_grad_norm": self._kd_sum[i] / n,
                    "mean_det_grad_norm": self._det_sum[i] / n,
                    "weight": self._weights[i],
                }
                for i, name in enumerate(self.names)
            ],
        }
