"""Solver keys dla-kd adds to Detectron2's: the optimizer choice (DiT/ViT recipes use AdamW)."""


def add_solver_config(cfg) -> None:
    """``SOLVER.OPTIMIZER``: "SGD" (Detectron2's default, uses MOMENTUM/NESTEROV) or "AdamW"
    (uses ``SOLVER.BETAS``). Both use BASE_LR, WEIGHT_DECAY(_NORM/_BIAS), BIAS_LR_FACTOR and
    CLIP_GRADIENTS as Detectron2 does."""
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BETAS = (0.9, 0.999)
