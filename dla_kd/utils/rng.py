"""Running code on a fork of the global random streams."""
import contextlib
import random

import numpy as np
import torch


@contextlib.contextmanager
def forked_rng():
    """Run the block on copies of the global random streams: torch (CPU, and the current CUDA
    device when CUDA is available), numpy and Python's ``random``. Whatever the block draws, the
    code after it sees the numbers it would have seen had the block not run.

    A distillation run builds its teacher, adapters and teacher sanity check inside this, so that
    with the same ``SEED`` its student, data order and sampling match the plain run's.
    """
    np_state = np.random.get_state()
    py_state = random.getstate()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
