"""Per-loss weight schedules: linear warm-up, constant / linear / cosine decay, hard stop."""
import math

DECAYS = ("none", "linear", "cosine")


class LossWeightSchedule:
    """Multiplier of a KD loss as a function of the training iteration.

    factor(it) = warmup(it) * decay(it), and 0 from ``stop_iter`` on, where
    warmup rises linearly from 0 to 1 over ``warmup_iters`` and decay goes from 1 at the end of
    warm-up to ``final_factor`` at ``decay_end_iter`` ("linear" or "cosine"; "none" keeps 1).
    The factor depends on the iteration only, so resuming at iteration k restores it.
    """

    def __init__(self, warmup_iters=0, decay="none", decay_end_iter=-1, final_factor=0.0, stop_iter=-1, max_iter=0):
        if decay not in DECAYS:
            raise ValueError(f"Unknown KD weight decay {decay!r}; choose one of {DECAYS}")
        self.warmup_iters = int(warmup_iters)
        self.decay = decay
        self.decay_end_iter = int(decay_end_iter) if decay_end_iter >= 0 else int(max_iter)
        self.final_factor = float(final_factor)
        self.stop_iter = int(stop_iter)
        if decay != "none" and self.decay_end_iter <= self.warmup_iters:
            raise ValueError(
                f"KD weight decay ends at iteration {self.decay_end_iter}, not after the warm-up "
                f"({self.warmup_iters} iterations): set SCHEDULE.DECAY_END_ITER or SOLVER.MAX_ITER"
            )

    @classmethod
    def from_config(cls, node, max_iter: int) -> "LossWeightSchedule":
        """``node``: a ``DISTILL.<LOSS>.SCHEDULE`` config node."""
        return cls(node.WARMUP_ITERS, node.DECAY, node.DECAY_END_ITER, node.FINAL_FACTOR, node.STOP_ITER, max_iter)

    def __call__(self, it: int) -> float:
        if 0 <= self.stop_iter <= it:
            return 0.0
        factor = min(1.0, (it + 1) / self.warmup_iters) if self.warmup_iters > 0 else 1.0
        if self.decay == "none" or it < self.warmup_iters:
            return factor
        progress = min(1.0, (it - self.warmup_iters) / (self.decay_end_iter - self.warmup_iters))
        if self.decay == "linear":
            shape = 1.0 - progress
        else:
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        return factor * (self.final_factor + (1.0 - self.final_factor) * shape)
