"""On-disk cache of the teacher's FPN features for multi-epoch runs with deterministic inputs.

The teacher runs on each image alone, with or without the cache (``teacher_features``), so a
cached feature is exactly what a live forward gives, whatever the batch's other images;
the batch is assembled from the per-image features by ``teacher_features.paste``.
Only the levels the distillers need are stored (``levels``), one file per (image, size).

The cache directory holds ``cache_meta.json``, a signature of everything that determines the
features (the teacher's model config and dtype, the weights' sha256, levels, input pipeline,
storage dtype: :func:`cache_signature`); a run whose
signature differs stops with :class:`FeatureCacheMismatchError` instead of reading stale
features. Random augmentation would make cached features wrong, so it is refused at build.
"""
import hashlib
import json
import os
from typing import Callable, Dict, List, Sequence

from ..utils.files import atomic_write, atomic_write_json, file_sha256
from .teacher_features import PerImage

import torch

META_FILE = "cache_meta.json"
_DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}


class FeatureCacheMismatchError(RuntimeError):
    """The feature cache on disk was written for another teacher/config."""


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
    levels, the student's input pipeline (the teacher sees the student's images) and the storage
    dtype. The rest of the teacher's config (SOLVER, DATASETS, TEST, the DISTILL section a new
    release may extend) does not change a feature and is not part of it."""
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
    """Sub-folder of ``DISTILL.TEACHER.FEATURE_CACHE.DIR`` for one set of levels, e.g. ``p2-p3-p4-p5``:
    runs that read different levels (PKD p2..p5, CWD p2..p6) share one DIR without clashing."""
    return "-".join(sorted(levels)) or "none"


class TeacherFeatureCache:
    """Per-image teacher features on disk, in ``<directory>/<levels_folder(levels)>`` (created;
    its signature checked)."""

    def __init__(self, directory: str, levels: Sequence[str], signature: Dict, dtype: str = "float16"):
        if dtype not in _DTYPES:
            raise ValueError(f"DISTILL.TEACHER.FEATURE_CACHE.DTYPE must be one of {sorted(_DTYPES)}, got {dtype!r}")
        directory = os.path.join(directory, levels_folder(levels))
        self.directory = directory
        self.levels = list(levels)
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

    def _path(self, item: Dict, image_hw) -> str:
        if "file_name" not in item:
            raise KeyError("The teacher feature cache keys images by 'file_name', which this input lacks")
        key = image_key(item["file_name"], image_hw)
        return os.path.join(self.directory, key[:2], f"{key}.pt")

    def features(
        self,
        batched_inputs: List[Dict],
        images: List[torch.Tensor],
        compute: Callable[[List[torch.Tensor]], PerImage],
    ) -> PerImage:
        """Per-image teacher features, name -> (C, h_l, w_l) for the cached ``levels``, in the
        storage dtype on the images' device: read from disk, or computed and stored.

        images: per-image normalised, individually padded (3, h, w) tensors
        (``teacher_features.pad_each``); compute: per-image features of a list of such images
        (``teacher_features.per_image_features``), called once with all the misses.
        """
        paths = [self._path(item, tuple(image.shape[-2:])) for item, image in zip(batched_inputs, images)]
        missing = [i for i, path in enumerate(paths) if not os.path.isfile(path)]
        computed = dict(zip(missing, compute([images[i] for i in missing]) if missing else []))
        out = []
        for i, (path, image) in enumerate(zip(paths, images)):
            if i not in computed:
                out.append(torch.load(path, map_location=image.device))
                continue
            feats = {k: v.to(self.dtype) for k, v in computed[i].items() if k in self.levels}
            os.makedirs(os.path.dirname(path), exist_ok=True)
            on_cpu = {k: v.cpu().clone() for k, v in feats.items()}  # clone: not the batch's storage
            atomic_write(path, lambda f: torch.save(on_cpu, f), durable=False, unique=True)
            out.append(feats)
        return out
