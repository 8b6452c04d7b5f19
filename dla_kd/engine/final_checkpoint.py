"""Resuming a finished run: the final checkpoint must be there and readable.

A run killed while writing ``model_final.pth`` (before saves were atomic) left it truncated while
``last_checkpoint`` still named the previous checkpoint; a finished run whose final file was
deleted is the same case. ``--resume`` then loads that checkpoint, finds nothing left to train and
would end with no usable ``model_final.pth``; here it is written again from the state just loaded
(the same iteration: the last periodic checkpoint of a finished run is the final state).
"""
import logging
import os

from detectron2.utils import comm

from ..checkpoint import checkpoint_problem

logger = logging.getLogger(__name__)

FINAL_NAME = "model_final"


def restore_final_checkpoint(trainer) -> bool:
    """After ``trainer.resume_or_load(resume=True)``: if nothing is left to train and
    ``<OUTPUT_DIR>/model_final.pth`` is missing or unreadable, save it again (main process).
    Returns True when it was re-created."""
    if trainer.start_iter < trainer.max_iter or not comm.is_main_process():
        return False
    problem = checkpoint_problem(os.path.join(trainer.cfg.OUTPUT_DIR, f"{FINAL_NAME}.pth"))
    if problem is None:
        return False
    logger.warning(f"Training already finished (iteration {trainer.start_iter - 1}) but {problem}: writing it again")
    trainer.checkpointer.save(FINAL_NAME, iteration=trainer.start_iter - 1)
    return True
