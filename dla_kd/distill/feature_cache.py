"""On-disk cache of the teacher's FPN features for multi-epoch runs with deterministic inputs.

The teacher runs on each image alone, with or without the cache (``teacher_features``), so a
cached feature is exactly what a live forward gives, whatever the batch's other images;
the batch is assembled from the per-image features by ``teacher_features.paste``.
A cache holds the levels of ``DISTILL.TEACHER.FEATURE_CACHE.LEVELS`` (default: the levels the
step reads), one file per (image, size), in a sub-folder named after its levels.

* Size: :func:`estimate_cache_bytes` says before the first entry is written how large the cache
  grows (logged); beyond ``FEATURE_CACHE.MAX_GB`` the build stops (:class:`FeatureCacheTooLargeError`).
* Levels: levels the step reads but the cache does not hold are computed by the teacher in the
  step (its backbone then runs every step); levels the cache holds but the step does not read are
  stored and not used, so one cache serves runs of losses that read different levels.
* Loading: :class:`CachedFeaturesMapper` reads an image's entry in the data loader's worker
  processes and attaches it to the dataset dict (``"teacher_features"``); the step only moves it
  to the device. Inputs without it (no such mapper) are read in the step.
* Damage: an entry that cannot be read (a truncated file, another content) is named in a
  warning, recomputed by the teacher and rewritten atomically.

The cache's folder holds ``cache_meta.json``, a signature of everything that determines the
features (the teacher's model config and dtype, the weights' sha256, the cached levels, input
pipeline, storage dtype: :func:`cache_signature`); a run whose signature differs stops with
:class:`FeatureCacheMismatchError` instead of reading stale features. Random augmentation would
make cached features wrong, so it is refused at build.
"""
import hashlib
import json
import logging
import math
import os
import shutil
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..utils.files import atomic_write, atomic_write_json, file_sha256
from .teacher_features import PerImage

import torch

logger = logging.getLogger(__name__)

META_FILE = "cache_meta.json"
FEATURES_KEY = "teacher_features"  # dataset-dict key of the entry CachedFeaturesMapper attaches
_DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}
ENTRY_OVERHEAD_BYTES = 1500  # torch.save's zip container per entry, about (measured: 1.1-1.4 kB)


class FeatureCacheMismatchError(RuntimeError):
    """The feature cache on disk was written for another teacher/config."""


class FeatureCacheTooLargeError(RuntimeError):
    """The estimated cache size exceeds ``DISTILL.TEACHER.FEATURE_CACHE.MAX_GB``."""


class UnreadableEntryError(RuntimeError):
    """A cache entry that cannot be read back as the cached levels (truncated, another content)."""


def check_deterministic_inputs(cfg) -> None:
    """Refuse configs whose training inputs change from epoch to epoch."""
    problems = []
    if cfg.INPUT.RANDOM_FLIP != "none":
        problems.append(f"INPUT.RANDOM_FLIP is {cfg.INPUT.RANDOM_FLIP!r} (needs 'none')")
    if len(cfg.INPUT.MIN_SIZE_TRAIN) != 1 and not (
        cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "range" and cfg.INPUT.MIN_SIZE_TRAIN[0] == cfg.INPUT.MIN_SIZE_TRAIN[-1]
    ):
        problems.append(f"INPUT.MIN_SIZE_TRAIN {tuple(cfg.INPUT.MIN_SIZE_TRAIN)} picks a random size")
    if cfg.INPUT.CROP.ENABLED:
        problems.append("INPUT.CROP.ENABLED crops at random")
    if problems:
        raise ValueError(
            "DISTILL.TEACHER.FEATURE_CACHE needs deterministic training inputs: " + "; ".join(problems)
        )


def _weights_identity(path: str) -> Dict:
    """What the weights are, not where: a copied checkpoint, another working directory or a
    checkout elsewhere keeps its cache."""
    if not path:
        return {"note": "random init"}
    return {"sha256": file_sha256(path), "size": os.path.getsize(path)}


def cache_signature(cfg, tcfg, levels: Sequence[str]) -> Dict:
    """Everything the cached features depend on: the teacher's model (its ``MODEL`` node, whole:
    architecture, pixel statistics, device) and input format, its compute dtype and weights, the
    cached ``levels``, the student's input pipeline (the teacher sees the student's images) and
    the storage dtype. The rest of the teacher's config (SOLVER, DATASETS, TEST, the DISTILL
    section a new release may extend) does not change a feature and is not part of it."""
    return {
        "teacher_model_sha1": hashlib.sha1(tcfg.MODEL.dump().encode()).hexdigest(),
        "teacher_input_format": tcfg.INPUT.FORMAT,
        "teacher_dtype": cfg.DISTILL.TEACHER.DTYPE,
        "teacher_weights": _weights_identity(cfg.DISTILL.TEACHER.WEIGHTS),
        "levels": sorted(levels),
        "input_format": cfg.INPUT.FORMAT,
        "min_size_train": list(cfg.INPUT.MIN_SIZE_TRAIN),
        "max_size_train": cfg.INPUT.MAX_SIZE_TRAIN,
        "dtype": cfg.DISTILL.TEACHER.FEATURE_CACHE.DTYPE,
    }


def image_key(file_name: str, image_hw: Sequence[int]) -> str:
    """Cache key (sha1 hex) of one image at input size ``image_hw`` (h, w): the file's real path, so
    every spelling of it (relative or absolute, through a symlinked folder or another working
    directory) reads the same entry, with its size and modification time, so a file rewritten under
    the same name (a split drawn again, a page replaced) is computed anew instead of read stale. A
    name that is not a file on disk is keyed as spelled."""
    try:
        st = os.stat(file_name)
        identity = f"{os.path.realpath(file_name)}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        identity = file_name
    return hashlib.sha1(f"{identity}|{image_hw[0]}x{image_hw[1]}".encode()).hexdigest()


def levels_folder(levels: Sequence[str]) -> str:
    """Sub-folder of ``DISTILL.TEACHER.FEATURE_CACHE.DIR`` for one set of cached levels, e.g.
    ``p2-p3-p4-p5``: caches of different levels share one DIR without clashing, and every entry's
    path names its levels."""
    return "-".join(sorted(levels)) or "none"


def padded_size(image_hw: Sequence[int], padding: Dict[str, int]) -> Tuple[int, int]:
    """(h, w) of a (3, h, w) image padded alone under ``padding`` (``ImageList.from_tensors``'s
    ``padding_constraints``), as ``teacher_features.pad_each`` pads it."""
    h, w = int(image_hw[0]), int(image_hw[1])
    square = padding.get("square_size", 0)
    if square > 0:
        h = w = square
    d = padding.get("size_divisibility", 0)
    if d > 1:
        h, w = math.ceil(h / d) * d, math.ceil(w / d) * d
    return h, w


def entry_bytes(padded_hw: Sequence[int], level_shapes: Dict[str, Tuple[int, int]], dtype: str) -> int:
    """Bytes of one entry: padded image (h, w), ``level_shapes`` name -> (channels, stride) of
    the cached levels, storage ``dtype``; each level is (C, ceil(h/stride), ceil(w/stride))."""
    itemsize = torch.empty((), dtype=_DTYPES[dtype]).element_size()
    cells = sum(c * math.ceil(padded_hw[0] / s) * math.ceil(padded_hw[1] / s) for c, s in level_shapes.values())
    return cells * itemsize + ENTRY_OVERHEAD_BYTES


def estimate_cache_bytes(
    page_sizes: Iterable[Tuple[int, int]], level_shapes: Dict[str, Tuple[int, int]], min_size: int, max_size: int,
    padding: Dict[str, int], dtype: str,
) -> int:
    """Bytes of a full cache: one entry per page of ``page_sizes`` ((height, width) on file),
    resized as the training mapper resizes it (shortest edge ``min_size``, longest at most
    ``max_size``: ``ResizeShortestEdge``), padded (:func:`padded_size`), with the levels of
    ``level_shapes`` (:func:`entry_bytes`)."""
    from detectron2.data.transforms import ResizeShortestEdge

    per_size: Dict[Tuple[int, int], int] = {}
    total = 0
    for h, w in page_sizes:
        hw = padded_size(ResizeShortestEdge.get_output_shape(h, w, min_size, max_size), padding)
        if hw not in per_size:
            per_size[hw] = entry_bytes(hw, level_shapes, dtype)
        total += per_size[hw]
    return total


def _training_page_sizes(cfg) -> Tuple[List[Tuple[int, int]], List[str]]:
    """(height, width) of every training page (DATASETS.TRAIN, and DATASETS.UNLABELED when its
    pages are distilled), from the dataset records; a record without them counts as a
    MAX_SIZE_TRAIN square (an upper bound). Returns (sizes, notes on what could not be read)."""
    from detectron2.data import DatasetCatalog

    names = list(cfg.DATASETS.TRAIN) + (list(cfg.DATASETS.UNLABELED) if cfg.DISTILL.UNLABELED.RATIO > 0 else [])
    sizes, notes, unsized = [], [], 0
    for name in names:
        try:
            records = DatasetCatalog.get(name)
        except Exception as e:  # an unreadable dataset stops the training's own loader with its error
            notes.append(f"dataset {name!r} not read ({type(e).__name__}: {e})")
            continue
        for r in records:
            if "height" in r and "width" in r:
                sizes.append((int(r["height"]), int(r["width"])))
            else:
                unsized += 1
                sizes.append((cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN))
    if unsized:
        notes.append(f"{unsized} records without height/width counted at the largest size")
    return sizes, notes


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def check_cache_size(cfg, directory: str, level_shapes: Dict[str, Tuple[int, int]], padding: Dict[str, int]) -> int:
    """Estimate the full cache of ``cfg``'s training pages (:func:`estimate_cache_bytes`), log it
    with the free space of ``directory``'s disk, and raise :class:`FeatureCacheTooLargeError`
    beyond ``DISTILL.TEACHER.FEATURE_CACHE.MAX_GB`` (< 0: no limit). Returns the estimate in bytes."""
    node = cfg.DISTILL.TEACHER.FEATURE_CACHE
    sizes, notes = _training_page_sizes(cfg)
    total = estimate_cache_bytes(
        sizes, level_shapes, cfg.INPUT.MIN_SIZE_TRAIN[0], cfg.INPUT.MAX_SIZE_TRAIN, padding, node.DTYPE
    )
    levels = ", ".join(f"{k} ({c} ch, stride {s})" for k, (c, s) in sorted(level_shapes.items()))
    message = (
        f"Teacher feature cache {directory}: about {_gb(total)} when full, {len(sizes)} pages x "
        f"{_gb(total / max(len(sizes), 1))} on average ({levels}; {node.DTYPE})"
    )
    free = shutil.disk_usage(_existing_parent(directory)).free
    message += f"; {_gb(free)} free on its disk"
    if notes:
        message += "; " + "; ".join(notes)
    if 0 <= node.MAX_GB < total / 1e9:
        raise FeatureCacheTooLargeError(
            f"{message}. That exceeds DISTILL.TEACHER.FEATURE_CACHE.MAX_GB ({node.MAX_GB:g}): raise it if the disk "
            "holds it, or cache less (DISTILL.TEACHER.FEATURE_CACHE.DTYPE float16, FEATURE_CACHE.LEVELS, a loss's "
            "IN_FEATURES without p2), or train without the cache (FEATURE_CACHE.DIR '')."
        )
    (logger.warning if total > free else logger.info)(message + (": more than is free" if total > free else ""))
    return total


def _existing_parent(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


class TeacherFeatureCache:
    """Per-image teacher features of ``levels`` on disk, in ``<directory>/<levels_folder(levels)>``
    (created; its signature checked)."""

    def __init__(self, directory: str, levels: Sequence[str], signature: Dict, dtype: str = "float16"):
        if dtype not in _DTYPES:
            raise ValueError(f"DISTILL.TEACHER.FEATURE_CACHE.DTYPE must be one of {sorted(_DTYPES)}, got {dtype!r}")
        directory = os.path.join(directory, levels_folder(levels))
        self.directory = directory
        self.levels = sorted(levels)
        self.dtype = _DTYPES[dtype]
        os.makedirs(directory, exist_ok=True)
        meta_path = os.path.join(directory, META_FILE)
        if os.path.isfile(meta_path):
            with open(meta_path) as f:
                on_disk = json.load(f)
            if on_disk != signature:
                diff = sorted(k for k in set(on_disk) | set(signature) if on_disk.get(k) != signature.get(k))
                raise FeatureCacheMismatchError(
                    f"The teacher feature cache {directory} was written for another setting (differs in {diff}). "
                    "Delete it or set DISTILL.TEACHER.FEATURE_CACHE.DIR to a new folder."
                )
        else:
            atomic_write_json(meta_path, signature, unique=True, indent=2)

    def entry_path(self, item: Dict, image_hw: Sequence[int]) -> str:
        """The entry of input ``item`` (a dataset dict with ``file_name``) at padded size ``image_hw``."""
        if "file_name" not in item:
            raise KeyError("The teacher feature cache keys images by 'file_name', which this input lacks")
        key = image_key(item["file_name"], image_hw)
        return os.path.join(self.directory, key[:2], f"{key}.pt")

    def read(self, path: str) -> Dict[str, torch.Tensor]:
        """The entry at ``path`` on the CPU: name -> (C, h, w) in the storage dtype, for every cached
        level. Raises ``FileNotFoundError`` if there is none and :class:`UnreadableEntryError`
        (naming the file) if it cannot be read back as such."""
        try:
            entry = torch.load(path, map_location="cpu")
        except FileNotFoundError:
            raise
        except Exception as e:  # torch raises RuntimeError, EOFError, pickle/zip errors for damaged files
            raise UnreadableEntryError(f"{path}: {type(e).__name__}: {e}") from e
        if not isinstance(entry, dict) or sorted(entry) != self.levels or any(
            not isinstance(v, torch.Tensor) or v.dtype != self.dtype or v.dim() != 3 for v in entry.values()
        ):
            found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise UnreadableEntryError(f"{path}: holds {found}, not (C, h, w) {self.dtype} maps of {self.levels}")
        return entry

    def lookup(self, item: Dict, image_hw: Sequence[int]) -> Optional[Dict[str, torch.Tensor]]:
        """The entry of ``item`` at padded size ``image_hw`` (:meth:`read`), or None when there is
        none or it is unreadable (then a warning names it; the step recomputes and rewrites it)."""
        path = self.entry_path(item, image_hw)
        try:
            return self.read(path)
        except FileNotFoundError:
            return None
        except UnreadableEntryError as e:
            logger.warning(
                f"Teacher feature cache entry of {item['file_name']} ({image_hw[0]}x{image_hw[1]}) is unreadable, "
                f"it will be recomputed and rewritten: {e}"
            )
            return None

    def features(
        self,
        batched_inputs: List[Dict],
        images: List[torch.Tensor],
        compute: Callable[..., PerImage],
        levels: Optional[Sequence[str]] = None,
    ) -> PerImage:
        """Per-image teacher features of ``levels`` (the levels the step reads; default: the
        cached ones), name -> (C, h_l, w_l) on the images' device: cached levels in the storage
        dtype, from the input's ``"teacher_features"`` (:class:`CachedFeaturesMapper`), from disk,
        or computed and stored; the others computed (the teacher's dtype).

        images: per-image normalised, individually padded (3, h, w) tensors
        (``teacher_features.pad_each``); compute: per-image features of a list of such images, of
        ``levels`` and the cached levels (``teacher_features.per_image_features``), called once,
        with the images whose entry is missing, or with all when the step reads levels the cache lacks.
        """
        levels = sorted(levels if levels is not None else self.levels)
        live_levels = [k for k in levels if k not in self.levels]
        entries = []
        for item, image in zip(batched_inputs, images):
            if FEATURES_KEY in item:  # looked up in a loader worker (None: missing or unreadable)
                entries.append(item[FEATURES_KEY])
            else:
                entries.append(self.lookup(item, tuple(image.shape[-2:])))
        run = [i for i, e in enumerate(entries) if e is None or live_levels]
        computed = dict(zip(run, compute([images[i] for i in run]) if run else []))
        out = []
        for i, (item, image) in enumerate(zip(batched_inputs, images)):
            entry = entries[i]
            if entry is None:
                entry = {k: computed[i][k].to(self.dtype) for k in self.levels}
                path = self.entry_path(item, tuple(image.shape[-2:]))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                on_cpu = {k: v.cpu().clone() for k, v in entry.items()}  # clone: not the batch's storage
                atomic_write(path, lambda f: torch.save(on_cpu, f), durable=False, unique=True)
            feats = {k: entry[k].to(image.device, non_blocking=True) for k in levels if k in self.levels}
            feats.update({k: computed[i][k] for k in live_levels})
            out.append(feats)
        return out


class CachedFeaturesMapper:
    """A dataset mapper (e.g. Detectron2's ``DatasetMapper``) that also attaches each mapped
    image's cache entry as ``dict["teacher_features"]`` (name -> (C, h, w) CPU tensors; None when
    the entry is missing or unreadable), so the data loader's worker processes read the cache
    and the training step only moves the features to its device.

    padding: the model's common padding constraints (``DistillGeneralizedRCNN.padding``): an entry
    is keyed by the image's padded size, as the step pads it."""

    def __init__(self, mapper: Callable[[Dict], Optional[Dict]], cache: TeacherFeatureCache, padding: Dict[str, int]):
        self.mapper, self.cache, self.padding = mapper, cache, dict(padding)

    def __call__(self, dataset_dict: Dict) -> Optional[Dict]:
        mapped = self.mapper(dataset_dict)
        if mapped is not None:
            hw = padded_size(mapped["image"].shape[-2:], self.padding)
            mapped[FEATURES_KEY] = self.cache.lookup(mapped, hw)
        return mapped


def build_feature_cache(cfg, tcfg, teacher_shapes: Dict, step_levels: Sequence[str], padding: Dict[str, int]):
    """The cache of ``DISTILL.TEACHER.FEATURE_CACHE`` (None when DIR is empty) for a step that
    reads ``step_levels``; ``teacher_shapes``: the teacher backbone's ``output_shape()``. Checks
    the inputs are deterministic and the cached levels exist, estimates the size and refuses
    beyond MAX_GB (:func:`check_cache_size`), and warns when the step reads levels not cached."""
    node = cfg.DISTILL.TEACHER.FEATURE_CACHE
    if not node.DIR:
        return None
    check_deterministic_inputs(cfg)
    levels = sorted(node.LEVELS) if node.LEVELS else sorted(step_levels)
    unknown = [k for k in levels if k not in teacher_shapes]
    if unknown:
        raise ValueError(
            f"DISTILL.TEACHER.FEATURE_CACHE.LEVELS {list(node.LEVELS)}: the teacher has no level {unknown} "
            f"(its levels: {sorted(teacher_shapes)})"
        )
    live = sorted(set(step_levels) - set(levels))
    if live:
        logger.warning(
            f"DISTILL.TEACHER.FEATURE_CACHE.LEVELS {levels} lacks {live}, which this run reads: the teacher's "
            "backbone runs every step to compute them (an FPN computes all its levels in one pass), so this run "
            "takes as long as without the cache; only runs that read cached levels alone skip the teacher"
        )
    shapes = {k: (teacher_shapes[k].channels, teacher_shapes[k].stride) for k in levels}
    check_cache_size(cfg, os.path.join(node.DIR, levels_folder(levels)), shapes, padding)
    return TeacherFeatureCache(node.DIR, levels, cache_signature(cfg, tcfg, levels), node.DTYPE)
