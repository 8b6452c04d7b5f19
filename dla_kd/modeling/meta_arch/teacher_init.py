"""What a distillation student takes from its teacher, and in which order with MODEL.WEIGHTS.

Two things copy teacher tensors into the student: SimKD (the teacher's RPN and ROI heads are
reused) and ``DISTILL.INIT_FROM_TEACHER`` (tensors under its PREFIXES). Both run when the model
is built. Detectron2 loads ``MODEL.WEIGHTS`` later (the trainer's ``resume_or_load``), so the
order is defined there:

1. a plain detector checkpoint (``MODEL.WEIGHTS``) loads into the student first (a SimKD
   student's ``backbone.inner.*`` takes the checkpoint's ``backbone.*``);
2. the teacher copies are applied again: where both fill a tensor, the teacher wins;
3. a distillation checkpoint (``--resume``, or ``MODEL.WEIGHTS`` of a distillation run) is taken
   as it is and nothing is re-applied: its tensors were trained.
"""
import logging
from typing import List, Sequence

from torch import nn

from .student import copy_teacher_heads, init_from_teacher, uses_simkd

logger = logging.getLogger(__name__)


class TeacherInit:
    """The teacher copies of a distillation config; ``__call__(student, teacher)`` applies them
    and returns the student names written."""

    def __init__(self, simkd_heads: bool = False, train_heads: bool = False, prefixes: Sequence[str] = ()):
        self.simkd_heads = simkd_heads
        self.train_heads = train_heads
        self.prefixes = list(prefixes)

    @classmethod
    def from_config(cls, cfg) -> "TeacherInit":
        prefixes = cfg.DISTILL.INIT_FROM_TEACHER.PREFIXES if cfg.DISTILL.INIT_FROM_TEACHER.ENABLED else ()
        return cls(uses_simkd(cfg), cfg.DISTILL.SIMKD.TRAIN_HEADS, prefixes)

    def __call__(self, student: nn.Module, teacher: nn.Module) -> List[str]:
        written = []
        if self.simkd_heads:
            written += copy_teacher_heads(student, teacher, trainable=self.train_heads)
        if self.prefixes:
            written += init_from_teacher(student, teacher, self.prefixes)
        return written

    def after_plain_weights(self, student: nn.Module, teacher: nn.Module, loaded: Sequence[str]) -> List[str]:
        """Step 2 above, after a plain checkpoint filled the student names ``loaded``; logs the
        checkpoint tensors the teacher copies replaced."""
        written = self(student, teacher)
        replaced = sorted(set(written) & set(loaded))
        if replaced:
            logger.info(
                f"{len(replaced)} student tensors of MODEL.WEIGHTS replaced by the teacher's (SimKD heads / "
                f"DISTILL.INIT_FROM_TEACHER), e.g. {replaced[:3]}"
            )
        return written
