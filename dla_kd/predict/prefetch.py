"""Loading pages ahead of the model: images decoded and PDF pages rendered in worker processes
while the model runs on the pages before them.

Processes, not threads: PDFium is not thread-safe, not even across documents ("To parallelize
expensive pdfium tasks such as rendering, consider processes instead of threads", pypdfium2's
Python API docs). Workers are forked where the platform allows it (Linux; no re-import), each
keeps its current PDF open, and at most ``ahead`` pages are loaded or in flight at a time, so
memory stays bounded. With 0 workers pages are loaded in this process, one at a time.
"""
import multiprocessing
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Iterable, Iterator, Optional, Tuple

import numpy as np

from ..inference.inputs import PageJob, close_documents, load_page


def _load(job: PageJob) -> Tuple[Optional[np.ndarray], Optional[str]]:
    """(image, None) or (None, the reason it cannot be loaded): exceptions stay in the worker."""
    try:
        return load_page(job), None
    except Exception as e:  # InputError / UnreadableImageError carry a reason naming the problem
        return None, getattr(e, "reason", f"{type(e).__name__}: {e}")


def load_pages(jobs: Iterable[PageJob], workers: int = 1, ahead: int = 2
               ) -> Iterator[Tuple[PageJob, Optional[np.ndarray], Optional[str]]]:
    """Yield (job, image or None, failure reason or None) for every job, in order, loading up to
    ``ahead`` pages ahead in ``workers`` processes (0: here, when asked for)."""
    if workers <= 0:
        try:
            for job in jobs:
                yield (job, *_load(job))
        finally:
            close_documents()
        return
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=close_documents)
    pending = deque()
    try:
        for job in jobs:
            pending.append((job, pool.submit(_load, job)))
            if len(pending) >= max(ahead, 1):
                yield _result(*pending.popleft())
        while pending:
            yield _result(*pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _result(job: PageJob, future) -> Tuple[PageJob, Optional[np.ndarray], Optional[str]]:
    try:
        return (job, *future.result())
    except Exception as e:  # the worker died (e.g. PDFium crashed on a page): this page fails
        return job, None, f"{type(e).__name__}: {e}"
