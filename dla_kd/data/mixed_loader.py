"""Training batches that mix labelled pages (``DATASETS.TRAIN``) and pages without annotations
(``DATASETS.UNLABELED``) at ``DISTILL.UNLABELED.RATIO``.

Two of Detectron2's own train loaders, each with its sampler (``TrainingSampler`` for the
unlabeled pages; ``DATALOADER.SAMPLER_TRAIN`` for the labelled ones), ``DatasetMapper`` and
aspect-ratio grouping, one with the labelled and one with the unlabeled share of the batch;
:class:`MixedBatchLoader` concatenates one batch of each per step (labelled images first). So
every batch holds exactly the configured numbers, and every other loader convention (workers,
``DATALOADER.*``, augmentation) is Detectron2's. Unlabeled inputs have no ``"instances"``.
"""
import logging
from typing import Iterator, List, Optional, Tuple

from detectron2.data import DatasetMapper, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm

from .unlabeled import without_annotations

logger = logging.getLogger(__name__)


def uses_unlabeled(cfg) -> bool:
    """Whether training mixes unlabeled pages in; raises ``ValueError`` for settings that
    contradict each other (a ratio without datasets, datasets without a ratio, ratio out of [0, 1])."""
    ratio, names = cfg.DISTILL.UNLABELED.RATIO, list(cfg.DATASETS.UNLABELED)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"DISTILL.UNLABELED.RATIO must be in [0, 1], got {ratio}")
    if ratio > 0 and not names:
        raise ValueError(f"DISTILL.UNLABELED.RATIO is {ratio} but DATASETS.UNLABELED names no dataset")
    if names and ratio == 0:
        raise ValueError(
            f"DATASETS.UNLABELED is {names} but DISTILL.UNLABELED.RATIO is 0: its pages would never be used"
        )
    return ratio > 0


def split_batch(images_per_worker: int, ratio: float) -> Tuple[int, int]:
    """(labelled, unlabeled) images per worker batch: round(b x ratio) unlabeled (halves up)."""
    unlabeled = int(images_per_worker * ratio + 0.5)
    labelled = images_per_worker - unlabeled
    if unlabeled == 0 or (ratio < 1 and labelled == 0):
        raise ValueError(
            f"DISTILL.UNLABELED.RATIO {ratio} with {images_per_worker} images per worker batch gives "
            f"{labelled} labelled and {unlabeled} unlabeled images: raise SOLVER.IMS_PER_BATCH"
            + (" or set the ratio to 1 (unlabeled pages only)" if labelled == 0 else "")
        )
    if abs(unlabeled / images_per_worker - ratio) > 1e-6:
        logger.warning(
            f"DISTILL.UNLABELED.RATIO {ratio}: {unlabeled} of {images_per_worker} images per worker batch are unlabeled"
        )
    return labelled, unlabeled


class MixedBatchLoader:
    """Iterates ``labelled`` and ``unlabeled`` (Detectron2 train loaders: infinite iterables of
    lists of mapped dicts) together and yields their batches concatenated; ``labelled`` may be
    None (unlabeled pages only)."""

    def __init__(self, labelled, unlabeled):
        self.labelled, self.unlabeled = labelled, unlabeled

    def __iter__(self) -> Iterator[List[dict]]:
        if self.labelled is None:
            yield from self.unlabeled
            return
        for labelled, unlabeled in zip(self.labelled, self.unlabeled):
            yield list(labelled) + list(unlabeled)


def build_unlabeled_train_loader(cfg, images_per_worker: int, mapper=None):
    """Detectron2's train loader over ``DATASETS.UNLABELED`` (annotations dropped), batches of
    ``images_per_worker``."""
    dicts = without_annotations(
        get_detection_dataset_dicts(list(cfg.DATASETS.UNLABELED), filter_empty=False, check_consistency=False)
    )
    logger.info(f"Unlabeled pages: {len(dicts)} from {list(cfg.DATASETS.UNLABELED)}")
    return build_detection_train_loader(
        dicts,
        mapper=mapper or DatasetMapper(cfg, True),
        sampler=TrainingSampler(len(dicts)),
        total_batch_size=images_per_worker * comm.get_world_size(),
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )


def build_mixed_train_loader(cfg, mapper=None, dataset: Optional[List[dict]] = None) -> MixedBatchLoader:
    """Batches of ``SOLVER.IMS_PER_BATCH`` (over all workers) with the ``DISTILL.UNLABELED.RATIO``
    share from ``DATASETS.UNLABELED`` (see the module docstring). ``dataset``: the dicts of
    ``DATASETS.TRAIN`` when the caller loaded them already (not loaded again); None: loaded here
    as Detectron2's train loader loads them."""
    uses_unlabeled(cfg)
    world = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise ValueError(f"SOLVER.IMS_PER_BATCH ({cfg.SOLVER.IMS_PER_BATCH}) must be divisible by the {world} workers")
    n_labelled, n_unlabeled = split_batch(cfg.SOLVER.IMS_PER_BATCH // world, cfg.DISTILL.UNLABELED.RATIO)
    logger.info(f"Training batches per worker: {n_labelled} labelled + {n_unlabeled} unlabeled images")
    labelled = None
    if n_labelled:
        labelled = build_detection_train_loader(cfg, mapper=mapper, dataset=dataset,
                                                total_batch_size=n_labelled * world)
    return MixedBatchLoader(labelled, build_unlabeled_train_loader(cfg, n_unlabeled, mapper))
