"""Detectron2's ``DefaultTrainer.auto_scale_workers``, extended to the KD weight schedules.

With ``SOLVER.REFERENCE_WORLD_SIZE`` set and another number of workers, Detectron2 scales the
batch and learning rate up and ``MAX_ITER``, ``STEPS``, ``WARMUP_ITERS``, ... down by the same
factor. The iterations of every ``DISTILL.<LOSS>.SCHEDULE`` (``WARMUP_ITERS``,
``DECAY_END_ITER``, ``STOP_ITER``) are scaled with them, so that a schedule keeps its place in
training; -1 ("SOLVER.MAX_ITER" / "never") stays -1.
"""
import logging

from detectron2.config import CfgNode
from detectron2.engine import DefaultTrainer

logger = logging.getLogger(__name__)

SCHEDULE_ITER_KEYS = ("WARMUP_ITERS", "DECAY_END_ITER", "STOP_ITER")


def auto_scale_workers(cfg: CfgNode, num_workers: int) -> CfgNode:
    """``DefaultTrainer.auto_scale_workers(cfg, num_workers)`` + the KD schedules; ``cfg``
    itself when nothing is scaled, otherwise a new config (frozen if ``cfg`` was)."""
    reference = cfg.SOLVER.REFERENCE_WORLD_SIZE
    scaled = DefaultTrainer.auto_scale_workers(cfg, num_workers)
    if scaled is cfg or "DISTILL" not in scaled:
        return scaled
    scale = num_workers / reference
    frozen = scaled.is_frozen()
    scaled.defrost()
    for node in scaled.DISTILL.values():
        schedule = node.get("SCHEDULE") if isinstance(node, CfgNode) else None
        if not isinstance(schedule, CfgNode):
            continue
        for key in SCHEDULE_ITER_KEYS:
            if schedule[key] >= 0:
                schedule[key] = int(round(schedule[key] / scale))
    logger.info(f"KD schedule iterations (DISTILL.<LOSS>.SCHEDULE) scaled by 1/{scale:g}, like SOLVER.MAX_ITER")
    if frozen:
        scaled.freeze()
    return scaled
