"""Pages to predict on: image files, folders of images/PDFs, PDF pages rendered with pypdfium2.

:func:`collect_sources` turns the paths given into sources (opening every PDF once, so that a
corrupt or empty one is reported before any prediction and the page total is known) and failures;
:func:`iter_pages` yields a :class:`PageJob` for each page of a source and :func:`load_page`
decodes or renders one, so that one bad page does not stop the others. Jobs are plain data: they
are loaded in worker processes too (:mod:`.prefetch`; PDFium is not thread-safe, so not threads).
"""
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..data.pages import IMAGE_EXTENSIONS, PDF_EXTENSION, open_pdf, render_pdf_page
from .samples import read_image_rgb


class InputError(ValueError):
    """An input that cannot be read as pages: ``path``, ``page`` (or None), ``reason``; the
    message names the file."""

    def __init__(self, path: str, reason: str, page: Optional[int] = None):
        super().__init__(f"{path}{f' (page {page})' if page else ''}: {reason}")
        self.path, self.page, self.reason = path, page, reason


@dataclass
class Failure:
    path: str
    page: Optional[int]  # 1-based PDF page, None for the whole file
    error: str

    def __str__(self) -> str:
        return f"{self.path}{f' (page {self.page})' if self.page else ''}: {self.error}"


@dataclass
class Source:
    path: str
    kind: str  # "image" or "pdf"
    num_pages: int


def _open_pdf(path: str):
    try:
        return open_pdf(path)
    except ValueError as e:
        raise InputError(path, str(e)) from e


def _source(path: str) -> Source:
    if not os.path.exists(path):
        raise InputError(path, "no such file or folder")
    if path.lower().endswith(PDF_EXTENSION):
        pdf = _open_pdf(path)
        n = len(pdf)
        pdf.close()
        return Source(path, "pdf", n)
    return Source(path, "image", 1)


def _folder_files(folder: str) -> List[str]:
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS + (PDF_EXTENSION,)))
    return [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]


def collect_sources(paths: Sequence[str]) -> Tuple[List[Source], List[Failure]]:
    """Files and folders (their images and PDFs, not recursive) -> (sources, failures)."""
    sources, failures = [], []
    for path in paths:
        files = _folder_files(path) if os.path.isdir(path) else [path]
        if os.path.isdir(path) and not files:
            failures.append(Failure(path, None, f"no images or PDFs in folder (extensions {IMAGE_EXTENSIONS + (PDF_EXTENSION,)})"))
        for f in files:
            try:
                sources.append(_source(f))
            except InputError as e:
                failures.append(Failure(f, None, e.reason))
    return sources, failures


@dataclass(frozen=True)
class PageJob:
    """One page to load: a whole image file (``page`` None) or PDF page ``page`` (1-based) rendered
    at ``dpi``."""
    path: str
    page: Optional[int]
    dpi: Optional[float] = None


def render_page_rgb(pdf, index: int, dpi: float, path: str = "") -> np.ndarray:
    """(H, W, 3) uint8 RGB of page ``index`` (0-based) rendered at ``dpi``; InputError names ``path``."""
    try:
        image = render_pdf_page(pdf, index, dpi)
    except Exception as e:  # pypdfium2 raises PdfiumError, or ValueError on absurd sizes
        raise InputError(path, f"cannot render ({type(e).__name__}: {e})", index + 1) from e
    return np.asarray(image)


def iter_pages(source: Source, dpi: float) -> Iterator[PageJob]:
    """The pages of ``source``: the image, or every PDF page at ``dpi``."""
    if source.kind == "image":
        yield PageJob(source.path, None)
    else:
        yield from (PageJob(source.path, i + 1, dpi) for i in range(source.num_pages))


_open_documents: Dict[str, object] = {}  # the PDF this process renders from, kept open between its pages


def load_page(job: PageJob) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a page; InputError / UnreadableImageError name the file. The PDF
    stays open for its next pages (:func:`close_documents` closes it)."""
    if job.page is None:
        return read_image_rgb(job.path)
    if job.path not in _open_documents:
        close_documents()
        _open_documents[job.path] = _open_pdf(job.path)
    return render_page_rgb(_open_documents[job.path], job.page - 1, job.dpi, job.path)


def close_documents() -> None:
    """Close the PDF :func:`load_page` keeps open in this process."""
    while _open_documents:
        _open_documents.popitem()[1].close()
