"""Optimizers selected by ``SOLVER.OPTIMIZER``, with Detectron2's parameter groups and clipping."""
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


OPTIMIZERS = {"SGD": build_sgd, "AdamW": _adamw}


def build_optimizer(cfg, model) -> torch.optim.Optimizer:
    """The ``SOLVER.OPTIMIZER`` optimizer over the model's trainable parameters."""
    try:
        builder = OPTIMIZERS[cfg.SOLVER.OPTIMIZER]
    except KeyError:
        raise ValueError(f"SOLVER.OPTIMIZER must be one of {sorted(OPTIMIZERS)}, got {cfg.SOLVER.OPTIMIZER!r}") from None
    return builder(cfg, model)
