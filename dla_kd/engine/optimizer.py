"""Optimizers selected by ``SOLVER.OPTIMIZER``, with Detectron2's parameter groups and clipping.

``SOLVER.CLIP_GRADIENTS.CLIP_TYPE`` takes Detectron2's ``value`` and ``norm`` (per parameter) and
``full_model``: one norm over every parameter, clipped to ``CLIP_VALUE`` (``NORM_TYPE``), as the
DiT recipe trains (unilm ``dit/object_detection/ditod/mytrainer.py``, after Detectron2's
``projects/DeepLab/train_net.py``); Detectron2's own ``maybe_add_gradient_clipping`` knows no
``full_model``.
"""
import itertools

import torch
from detectron2.solver import build_optimizer as build_sgd
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping


def _adamw(cfg, model) -> torch.optim.Optimizer:
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    optimizer = torch.optim.AdamW(
        params, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS), weight_decay=cfg.SOLVER.WEIGHT_DECAY
    )
    return maybe_add_gradient_clipping(cfg, optimizer)


def _full_model_clipping(clip, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """``optimizer`` whose ``step`` first clips the norm of all its parameters' gradients together
    (``clip``: the ``SOLVER.CLIP_GRADIENTS`` node)."""
    max_norm, norm_type = float(clip.CLIP_VALUE), float(clip.NORM_TYPE)

    class FullModelGradientClipping(type(optimizer)):
        def step(self, closure=None):
            params = itertools.chain(*[group["params"] for group in self.param_groups])
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
            return super().step(closure)

    optimizer.__class__ = FullModelGradientClipping
    return optimizer


OPTIMIZERS = {"SGD": build_sgd, "AdamW": _adamw}
FULL_MODEL = "full_model"


def build_optimizer(cfg, model) -> torch.optim.Optimizer:
    """The ``SOLVER.OPTIMIZER`` optimizer over the model's trainable parameters."""
    try:
        builder = OPTIMIZERS[cfg.SOLVER.OPTIMIZER]
    except KeyError:
        raise ValueError(f"SOLVER.OPTIMIZER must be one of {sorted(OPTIMIZERS)}, got {cfg.SOLVER.OPTIMIZER!r}") from None
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == FULL_MODEL:
        # Detectron2's builders add only their own clip types: build without clipping, then clip.
        cfg = cfg.clone()
        cfg.defrost()
        cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False
        return _full_model_clipping(clip, builder(cfg, model))
    return builder(cfg, model)


def check_lr_steps(cfg) -> None:
    """Refuse ``SOLVER.STEPS`` that Detectron2's scheduler would reject deep inside fvcore
    ("Milestone must be smaller than total number of updates"): a step equal to
    ``SOLVER.MAX_ITER``, a step below 1, or steps not increasing. Steps past ``MAX_ITER`` stay
    allowed, as in Detectron2 (ignored with a warning): shortening a run with ``SOLVER.MAX_ITER``
    alone is common (tests, smoke runs)."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupMultiStepLR":
        return
    steps, max_iter = list(cfg.SOLVER.STEPS), cfg.SOLVER.MAX_ITER
    kept = [s for s in steps if s <= max_iter]
    if any(s < 1 for s in steps) or kept != sorted(set(kept)) or max_iter in kept:
        raise ValueError(
            f"SOLVER.STEPS {tuple(steps)} do not fit SOLVER.MAX_ITER {max_iter}: every step must be at least 1, "
            f"the steps increasing, and none equal to SOLVER.MAX_ITER (steps past it are ignored)"
        )


def reapply_solver_config(optimizer: torch.optim.Optimizer, scheduler, fresh_groups) -> None:
    """After ``--resume`` loaded the checkpoint's optimizer and scheduler state: give every
    parameter group the hyper-parameters the current config built (``fresh_groups``: the groups'
    settings before the load, without ``params``), the scheduler those base LRs, and each group
    the LR of the schedule at the resumed iteration. Without this a changed ``SOLVER.BASE_LR``,
    ``WEIGHT_DECAY`` or ``MOMENTUM`` is silently replaced by the checkpoint's (torch restores the
    groups' settings with the state). Momentum/Adam buffers are kept."""
    groups = optimizer.param_groups
    if len(groups) != len(fresh_groups):
        raise ValueError(f"the optimizer has {len(groups)} parameter groups, the config builds {len(fresh_groups)}")
    for group, fresh in zip(groups, fresh_groups):
        group.update(fresh)
    if hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [g["initial_lr"] for g in groups]
        for group, lr in zip(groups, scheduler.get_lr()):
            group["lr"] = lr
