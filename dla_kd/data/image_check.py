"""Image files of a dataset checked when it is loaded, before any training step reads them.

A corrupt page image (empty file, random bytes, truncated PNG) used to crash a data-loader worker
a few iterations into training, and a json ``width``/``height`` that disagrees with the file
raised Detectron2's ``SizeMismatchError`` only when the page came up. Here every image of a
dataset is opened once with PIL when the dataset is loaded (the function ``DatasetCatalog``
calls), and every problem is reported, with its image id and file, in one message.

What is checked, per image (``$DLA_KD_IMAGE_CHECK``):

* ``header`` (default): PIL identifies the file and reads its size from the header (a few
  bytes). PNG and JPEG files must also end with their end marker (``IEND`` / ``FFD9`` in the
  last KiB, a read of the tail); a file without it is decoded fully to tell truncation from
  trailing bytes. Cheap enough for PubLayNet/DocLayNet.
* ``decode``: every image is decoded fully (catches damage in the middle of any format, TIFF
  included). Costs a full read of the dataset once; results are cached.
* ``off``: no check (the data loader finds bad files when it reads them).

The size compared with the json is the size Detectron2's ``read_image`` returns: the EXIF
orientation is applied (orientations 5-8 swap width and height).

Files are checked in parallel threads (``$DLA_KD_IMAGE_CHECK_WORKERS``, default
``min(16, 4 x CPUs)``). Results are cached per image by path, file size and modification time
in a small json: ``.<annotation file name>.image-check.json`` next to the annotation file, or in
``$DLA_KD_IMAGE_CHECK_CACHE`` (a folder) when set, e.g. when the dataset folder is read-only.
A header-only result is reused in ``header`` mode only; a ``decode`` result in both.
"""
import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image

from ..utils.files import atomic_write_json

logger = logging.getLogger(__name__)

ENV_MODE = "DLA_KD_IMAGE_CHECK"
ENV_WORKERS = "DLA_KD_IMAGE_CHECK_WORKERS"
ENV_CACHE_DIR = "DLA_KD_IMAGE_CHECK_CACHE"
MODES = ("header", "decode", "off")
_EXIF_ORIENTATION = 274  # as detectron2.data.detection_utils._EXIF_ORIENT
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_END_MARKERS = {"PNG": b"IEND", "JPEG": b"\xff\xd9"}
_TAIL_BYTES = 1024
_CACHE_VERSION = 1
# A cache entry (a json list): [file size, mtime_ns, fully decoded, width, height, error or None].
CacheEntry = list


def image_check_mode() -> str:
    """The check mode from ``$DLA_KD_IMAGE_CHECK`` (default ``header``)."""
    mode = os.environ.get(ENV_MODE, "header").strip().lower() or "header"
    if mode not in MODES:
        raise ValueError(f"${ENV_MODE} must be one of {MODES}, got {mode!r}")
    return mode


def _has_end_marker(path: str, image_format: str) -> bool:
    marker = _END_MARKERS.get(image_format)
    if marker is None:
        return True
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - _TAIL_BYTES))
        return marker in f.read()


def _exif_orientation(image: Image.Image, loaded: bool) -> Optional[int]:
    """The EXIF orientation tag, read as ``read_image`` reads it. A PNG's ``getexif()`` decodes
    the pixels to look for an eXIf chunk after them, so an undecoded PNG is only asked when its
    EXIF came before the pixels (then it is in ``image.info`` already)."""
    if image.format == "PNG" and not loaded and "exif" not in image.info:
        return None
    try:
        return image.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # unreadable EXIF: read_image ignores it too
        return None


def probe_image(path: str, decode: bool = False) -> Tuple[Optional[Tuple[int, int]], Optional[str]]:
    """``((width, height), None)`` as Detectron2's ``read_image`` sees the file, or
    ``(None, reason)`` when PIL cannot read it. ``decode`` decodes the pixels too."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            loaded = decode or not _has_end_marker(path, image.format)
            if loaded:
                image.load()
            orientation = _exif_orientation(image, loaded)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        return None, f"{type(e).__name__}: {e}"
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return (width, height), None


def _cache_path(json_file: str) -> str:
    cache_dir = os.environ.get(ENV_CACHE_DIR)
    name = os.path.basename(json_file)
    if cache_dir:
        key = hashlib.sha1(os.path.abspath(json_file).encode("utf-8")).hexdigest()[:16]
        return os.path.join(cache_dir, f"{name}.{key}.image-check.json")
    return os.path.join(os.path.dirname(json_file), f".{name}.image-check.json")


def _read_cache(path: str) -> Dict[str, CacheEntry]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data["images"] if data.get("version") == _CACHE_VERSION else {}
    except (OSError, ValueError, KeyError, AttributeError):
        return {}


def _write_cache(path: str, entries: Dict[str, CacheEntry]) -> None:
    """Atomic write (several ranks may check the same dataset at once); a read-only place is not
    an error, the check just runs again next time."""
    try:
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)
        atomic_write_json(path, {"version": _CACHE_VERSION, "images": entries}, unique=True)
    except OSError as e:
        logger.info(f"Image check results not cached ({e}); set ${ENV_CACHE_DIR} to a writable folder")


def _workers() -> int:
    return int(os.environ.get(ENV_WORKERS) or min(16, 4 * (os.cpu_count() or 1)))


def _check_files(paths: Sequence[str], json_file: str, decode: bool) -> Dict[str, CacheEntry]:
    """Cache entry of every path: from the cache when size and mtime agree, else probed."""
    cache_file = _cache_path(json_file)
    cache = _read_cache(cache_file)
    entries, todo = {}, []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as e:
            entries[path] = [-1, -1, False, 0, 0, f"cannot be read ({e.strerror})"]
            continue
        entry = cache.get(path)
        if st.st_size == 0:
            entries[path] = [0, st.st_mtime_ns, True, 0, 0, "empty file (0 bytes)"]
        elif entry and entry[0] == st.st_size and entry[1] == st.st_mtime_ns and (entry[2] or not decode):
            entries[path] = entry
        else:
            todo.append((path, st))
    if todo:
        start, workers = time.perf_counter(), _workers()
        with ThreadPoolExecutor(workers) as pool:
            probed = list(pool.map(lambda p: probe_image(p, decode), [path for path, _ in todo]))
        for (path, st), (size, error) in zip(todo, probed):
            entries[path] = [st.st_size, st.st_mtime_ns, decode, *(size or (0, 0)), error]
        logger.info(
            f"Checked {len(todo)} images of {json_file} ({'full decode' if decode else 'header'}, {workers} threads) "
            f"in {time.perf_counter() - start:.1f} s; {len(paths) - len(todo)} unchanged since the last check"
        )
        _write_cache(cache_file, entries)
    return entries


def find_image_problems(records: Sequence[Dict], json_file: str, mode: Optional[str] = None) -> List[str]:
    """One message per record whose image cannot be read or whose size differs from the record's
    ``width``/``height``, naming image id and file. ``records``: Detectron2 dicts (``file_name``
    absolute or relative to the working directory); ``json_file``: the annotation file they come
    from (names the cache); ``mode``: one of ``MODES``, default ``$DLA_KD_IMAGE_CHECK``."""
    mode = mode or image_check_mode()
    if mode == "off" or not records:
        return []
    entries = _check_files(sorted({r["file_name"] for r in records}), json_file, decode=mode == "decode")
    problems = []
    for record in records:
        path = record["file_name"]
        _, _, _, width, height, error = entries[path]
        where = f"image {record['image_id']} ({path})"
        if error:
            problems.append(f"{where}: not a readable image ({error})")
        elif (width, height) != (record["width"], record["height"]):
            problems.append(
                f"{where}: the json says width x height {record['width']}x{record['height']}, "
                f"the file is {width}x{height}"
            )
    return problems
