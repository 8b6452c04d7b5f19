"""Datasets of pages without annotations (``DATASETS.UNLABELED``): Detectron2 dataset dicts with
``file_name, height, width, image_id`` (plus ``source_file`` and ``page``) and no
``"annotations"``, so that ``DatasetMapper`` gives inputs without ``"instances"``."""
import logging
from typing import Dict, List, Sequence

from .coco_layout import DatasetNotFoundError
from .pages import collect_pages

logger = logging.getLogger(__name__)

# Skipped files and pages listed in one warning at most (the count of the rest is given).
_MAX_LISTED = 50


def load_unlabeled_pages(paths: Sequence[str], dpi: float, cache_dir: str, dataset_name: str = "",
                         progress: bool = True) -> List[Dict]:
    """Dataset dicts of the pages of ``paths`` (folders searched recursively, images, PDFs
    rendered at ``dpi`` and cached in ``cache_dir``; see :mod:`dla_kd.data.pages`). Skipped files
    and pages (unreadable, encrypted, empty) are listed in a warning; no usable page at all
    raises :class:`DatasetNotFoundError`."""
    label = f"dataset {dataset_name!r}" if dataset_name else "unlabeled pages"
    pages, skipped = collect_pages(paths, dpi, cache_dir, progress=progress, desc=dataset_name or "pages")
    if skipped:
        listed = [str(s) for s in skipped[:_MAX_LISTED]]
        if len(skipped) > _MAX_LISTED:
            listed.append(f"... and {len(skipped) - _MAX_LISTED} more")
        logger.warning(f"{label}: {len(skipped)} files or pages skipped:\n  " + "\n  ".join(listed))
    if not pages:
        raise DatasetNotFoundError(f"{label}: no usable page in {list(paths)}")
    logger.info(f"{label}: {len(pages)} pages from {len({p.source for p in pages})} files (cache {cache_dir})")
    return [
        {"file_name": p.file_name, "height": p.height, "width": p.width, "image_id": i,
         "source_file": p.source, "page": p.page}
        for i, p in enumerate(pages)
    ]


def without_annotations(dataset_dicts: List[Dict]) -> List[Dict]:
    """The dicts without their ``"annotations"`` (a labelled dataset used as unlabeled pages)."""
    return [{k: v for k, v in d.items() if k != "annotations"} for d in dataset_dicts]
