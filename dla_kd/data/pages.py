"""Pages of a user's own documents: image files and PDF pages, rendered and cached on disk.

:func:`collect_pages` turns files and folders (searched recursively for images and PDFs) into
:class:`Page` records, each an image file on disk with its size: an image file is used where it
is, a PDF page is rendered with pypdfium2 at ``dpi`` into ``cache_dir`` as PNG. What cannot be
used is returned as :class:`Skipped` with the reason, never raised: unreadable or encrypted PDFs,
PDFs without pages, images that fail to decode, and empty pages (:func:`is_blank`).

The cache remembers every file by absolute path, size, modification time and DPI
(``<cache_dir>/index.json``, written atomically): a second call renders and decodes nothing that
did not change. A file that changed gets new entries (its old renders stay on disk).
"""
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..utils.files import atomic_write, atomic_write_json

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif")
PDF_EXTENSION = ".pdf"
POINTS_PER_INCH = 72.0
INDEX_FILE = "index.json"
_INDEX_VERSION = 1
# A page is empty when fewer than BLANK_FRACTION of its pixels differ from its median grey level
# by more than BLANK_LEVEL (an all-white or all-black page, or one with a few specks).
BLANK_LEVEL = 32
BLANK_FRACTION = 1e-5
BLANK_REASON = "empty page (no content)"


@dataclass
class Page:
    """One usable page: ``file_name`` (absolute image path: the file itself or a rendered PNG),
    its ``width`` x ``height`` as Detectron2's ``read_image`` sees it, the ``source`` file and
    the 1-based ``page`` of a PDF (None for an image file)."""

    file_name: str
    width: int
    height: int
    source: str
    page: Optional[int] = None


@dataclass
class Skipped:
    """A file (``page`` None) or PDF page that is not used, and why."""

    path: str
    page: Optional[int]
    reason: str

    def __str__(self) -> str:
        return f"{self.path}{f' (page {self.page})' if self.page else ''}: {self.reason}"


def is_blank(gray: np.ndarray) -> bool:
    """(H, W) grey levels 0-255 -> True for an empty page (see ``BLANK_LEVEL``)."""
    gray = np.asarray(gray, dtype=np.int16)
    content = np.abs(gray - int(np.median(gray))) > BLANK_LEVEL
    return int(content.sum()) <= BLANK_FRACTION * gray.size


def find_page_files(paths: Sequence[str], exclude: Optional[str] = None) -> Tuple[List[str], List[Skipped]]:
    """Absolute paths of the images and PDFs among ``paths`` (files, and folders searched
    recursively, sorted; nothing under the folder ``exclude``, e.g. the render cache), and the
    paths that give none."""
    files, skipped = [], []
    excluded = os.path.abspath(exclude) + os.sep if exclude else None
    for path in paths:
        if os.path.isdir(path):
            found = sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(path)
                for name in names
                if name.lower().endswith(IMAGE_EXTENSIONS + (PDF_EXTENSION,))
                and not (excluded and os.path.abspath(os.path.join(root, name)).startswith(excluded))
            )
            if not found:
                skipped.append(Skipped(path, None, "no images or PDFs in this folder"))
            files += [os.path.abspath(f) for f in found]
        elif os.path.isfile(path):
            files.append(os.path.abspath(path))
        else:
            skipped.append(Skipped(path, None, "no such file or folder"))
    return files, skipped


def _read_gray(path: str) -> np.ndarray:
    """(H, W) uint8 grey levels of an image, EXIF orientation applied (as ``read_image``)."""
    from detectron2.data.detection_utils import read_image

    return read_image(path, format="L")[:, :, 0]


def looks_pageless(path: str, max_bytes: int = 1 << 24) -> bool:
    """A PDF header, an empty page tree (``/Count 0``) and no ``/Type /Page`` object: a document
    without pages. PDFium refuses to load such a file without setting an error (its last-error
    code is then stale: "Success", or the error of a previous file), so the reason is told from
    the bytes."""
    with open(path, "rb") as f:
        data = f.read(max_bytes)
    return (data.startswith(b"%PDF-") and re.search(rb"/Count\s*0(?![0-9])", data) is not None
            and re.search(rb"/Type\s*/Page(?![A-Za-z])", data) is None)


def open_pdf(path: str):
    """The pypdfium2 document, or ``ValueError`` with the reason it cannot be used: encrypted,
    no pages, corrupt or unreadable."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as e:
        with open(path, "rb") as f:
            encrypted = b"/Encrypt" in f.read()
        # PDFium's error code can be stale (left by an earlier file): trust "password" only
        # when the file declares encryption.
        if encrypted and "password" in str(e).lower():
            raise ValueError("encrypted PDF (needs a password)") from e
        if looks_pageless(path):
            raise ValueError("PDF has no pages") from e
        raise ValueError(f"corrupt or unreadable PDF ({e})") from e
    if len(pdf) == 0:
        pdf.close()
        raise ValueError("PDF has no pages")
    return pdf


def render_pdf_page(pdf, index: int, dpi: float) -> Image.Image:
    """Page ``index`` (0-based) of a pypdfium2 document rendered at ``dpi``, RGB."""
    page = pdf[index]
    try:
        return page.render(scale=dpi / POINTS_PER_INCH).to_pil().convert("RGB")
    finally:
        page.close()


def _save_png(image: Image.Image, path: str) -> None:
    """Atomic PNG write (a killed run leaves no partial file under the final name)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, lambda f: image.save(f, format="PNG", compress_level=3), durable=False, unique=True)


# A cache entry: {"pages": [[page or None, file or None, width, height, reason or None], ...]}.
Entry = Dict[str, list]


def _image_entry(path: str) -> Entry:
    try:
        gray = _read_gray(path)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        return {"pages": [[None, None, 0, 0, f"not a readable image ({type(e).__name__}: {e})"]]}
    height, width = gray.shape
    return {"pages": [[None, path, width, height, BLANK_REASON if is_blank(gray) else None]]}


def _pdf_entry(path: str, dpi: float, out_dir: str) -> Entry:
    try:
        pdf = open_pdf(path)
    except ValueError as e:
        return {"pages": [[None, None, 0, 0, str(e)]]}
    pages = []
    try:
        for i in range(len(pdf)):
            try:
                image = render_pdf_page(pdf, i, dpi)
            except Exception as e:  # PdfiumError, or ValueError on absurd page sizes
                pages.append([i + 1, None, 0, 0, f"cannot render ({type(e).__name__}: {e})"])
                continue
            if is_blank(np.asarray(image.convert("L"))):
                pages.append([i + 1, None, image.width, image.height, BLANK_REASON])
                continue
            file_name = os.path.join(out_dir, f"p{i + 1:04d}.png")
            _save_png(image, file_name)
            pages.append([i + 1, file_name, image.width, image.height, None])
    finally:
        pdf.close()
    return {"pages": pages}


class PageCache:
    """``<cache_dir>/index.json``: file key -> :data:`Entry`; PDF renders under
    ``<cache_dir>/<pdf stem>-<key digest>/p0001.png``."""

    def __init__(self, cache_dir: str):
        self.cache_dir = os.path.abspath(cache_dir)
        self.index_path = os.path.join(self.cache_dir, INDEX_FILE)
        self.entries: Dict[str, Entry] = {}
        try:
            with open(self.index_path, encoding="utf-8") as f:
                data = json.load(f)
            if data.get("version") == _INDEX_VERSION:
                self.entries = data["entries"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass
        self.changed = False

    @staticmethod
    def key(path: str, dpi: float) -> str:
        st = os.stat(path)
        return f"{path}|{st.st_size}|{st.st_mtime_ns}|{dpi:g}"

    def entry(self, path: str, dpi: float) -> Entry:
        """The cached entry of ``path``, or a new one (decoded or rendered now)."""
        key = self.key(path, dpi)
        entry = self.entries.get(key)
        if entry is not None and all(f is None or os.path.isfile(f) for _, f, *_ in entry["pages"]):
            return entry
        if path.lower().endswith(PDF_EXTENSION):
            stem = os.path.splitext(os.path.basename(path))[0]
            digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]
            entry = _pdf_entry(path, dpi, os.path.join(self.cache_dir, f"{stem}-{digest}"))
        else:
            entry = _image_entry(path)
        self.entries[key] = entry
        self.changed = True
        return entry

    def save(self) -> None:
        if not self.changed:
            return
        os.makedirs(self.cache_dir, exist_ok=True)
        atomic_write_json(self.index_path, {"version": _INDEX_VERSION, "entries": self.entries}, unique=True)
        self.changed = False


def collect_pages(
    paths: Sequence[str], dpi: float, cache_dir: str, progress: bool = True, desc: str = "pages"
) -> Tuple[List[Page], List[Skipped]]:
    """Usable pages of ``paths`` (images; PDFs rendered at ``dpi`` into ``cache_dir``) in a
    fixed order (the paths in order, folders sorted, PDF pages in order), and what was skipped.
    Shows a progress bar over the files (``progress``)."""
    files, skipped = find_page_files(paths, exclude=cache_dir)
    cache = PageCache(cache_dir)
    pages: List[Page] = []
    try:
        for path in tqdm(files, desc=desc, unit="file", disable=not progress, dynamic_ncols=True):
            for page, file_name, width, height, reason in cache.entry(path, dpi)["pages"]:
                if reason:
                    skipped.append(Skipped(path, page, reason))
                else:
                    pages.append(Page(file_name, width, height, path, page))
    finally:
        cache.save()
    return pages, skipped
