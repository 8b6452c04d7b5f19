"""A restarted run's ``metrics.json`` holds only the training its weights went through.

Detectron2's ``JSONWriter`` appends one JSON row per logged iteration to ``<OUTPUT_DIR>/metrics.json``.
A run killed after its last checkpoint had logged rows past it; the resumed run trains those
iterations again and would log them a second time, with other values. So before training starts
(``Trainer.resume_or_load``) the main process moves out of ``metrics.json`` every row of an
iteration training runs again (past the loaded checkpoint's; all rows when it starts from
iteration 0), and every line that is not a whole row (one cut by a kill mid-write, to which the
next row would be appended), into ``metrics_discarded_<k>.json`` beside it (k = 1, 2, ...; JSON
lines like ``metrics.json``; never overwritten), and logs how many rows of which iterations. Both
files are written atomically, the discarded rows first: a kill in between leaves them in both
files, never in neither. The writer of ``metrics.json`` opens it at its first write
(:class:`OpenAtFirstWrite`), after the file was replaced.
"""
import json
import logging
import os
import re
from typing import Callable, List, Optional

from detectron2.utils.events import EventWriter

from ..utils.files import atomic_write_text

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
_DISCARDED = re.compile(r"^metrics_discarded_(\d+)\.json$")
_LISTED = 10  # iterations named in the log line; beyond, the first and the last


def _row_iteration(line: str) -> Optional[int]:
    """The ``iteration`` of a metrics row, None for a line that is not a whole row."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    iteration = row.get("iteration") if isinstance(row, dict) else None
    return iteration if isinstance(iteration, int) and not isinstance(iteration, bool) else None


def discarded_path(output_dir: str) -> str:
    """``metrics_discarded_<k>.json`` of ``output_dir`` with k one above the highest there."""
    taken = [int(m.group(1)) for m in map(_DISCARDED.match, os.listdir(output_dir)) if m]
    return os.path.join(output_dir, f"metrics_discarded_{max(taken, default=0) + 1}.json")


def _iterations(iterations: List[int]) -> str:
    unique = sorted(set(iterations))
    if len(unique) <= _LISTED:
        return ", ".join(map(str, unique))
    return f"{unique[0]} to {unique[-1]}"


def move_out_rows_after(output_dir: str, iteration: int) -> Optional[str]:
    """Move the rows of ``<output_dir>/metrics.json`` logged for iterations after ``iteration``
    (the loaded checkpoint's; -1: training starts from iteration 0), and its lines that are not
    whole rows, into a new ``metrics_discarded_<k>.json`` (see the module docstring). Call it in
    the main process only, before training writes metrics. Returns the new file, None when
    nothing was moved."""
    path = os.path.join(output_dir, METRICS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    kept, moved, moved_iterations = [], [], []
    for line in lines:
        row_iteration = _row_iteration(line)
        if row_iteration is not None and row_iteration <= iteration:
            kept.append(line)
        else:
            moved.append(line)
            if row_iteration is not None:
                moved_iterations.append(row_iteration)
    if not moved:
        return None
    target = discarded_path(output_dir)
    atomic_write_text(target, "".join(f"{line}\n" for line in moved))
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    cut = len(moved) - len(moved_iterations)
    logger.warning(
        f"{path}: moved {len(moved_iterations)} rows of iterations after {iteration} "
        f"({_iterations(moved_iterations) or 'none'})" + (f" and {cut} lines that are not whole rows" if cut else "")
        + f" to {target}: training continues from iteration {iteration + 1} and logs those iterations again"
    )
    return target


class OpenAtFirstWrite(EventWriter):
    """The event writer ``make()`` returns, made at the first :meth:`write`. Detectron2's
    ``JSONWriter`` opens ``metrics.json`` for appending when it is made; made before
    :func:`move_out_rows_after` replaced the file, it would append to the replaced one."""

    def __init__(self, make: Callable[[], EventWriter]):
        self._make, self._writer = make, None

    def write(self) -> None:
        if self._writer is None:
            self._writer = self._make()
        self._writer.write()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
