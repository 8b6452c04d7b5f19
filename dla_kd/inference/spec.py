"""What a caller needs to know to run a detector, exported or not: input format and test size,
the constants baked into the graph, and the categories (dataset ids, names, colours).

Built from a (plain) config by :meth:`ModelSpec.from_cfg`, written into ``export_info.json`` by
:meth:`ModelSpec.to_dict` and read back by :meth:`ModelSpec.from_dict`, so a predictor runs an
exported file without Detectron2 configs or dataset catalogs.
"""
import logging
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Tuple

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.utils.colormap import colormap

logger = logging.getLogger(__name__)


@dataclass
class Category:
    """One class of the detector: ``contiguous_id`` is the model's class index (0..K-1), ``id``
    the category id of the dataset's COCO json."""

    contiguous_id: int
    id: int
    name: str
    color: Tuple[int, int, int]  # RGB, 0-255


@dataclass
class ModelSpec:
    input_format: str  # channel order the model reads: "BGR" or "RGB"
    min_size_test: int  # shortest image side at test time (0: no resizing)
    max_size_test: int  # cap of the longest side at test time
    pixel_mean: List[float]  # in input_format order; subtracted inside the graph
    pixel_std: List[float]  # divided inside the graph
    size_divisibility: int  # the graph pads the image to a multiple of this
    score_thresh_test: float  # baked into the graph
    nms_thresh_test: float  # baked into the graph
    detections_per_image: int  # baked into the graph
    mask_on: bool
    mask_threshold: float = 0.5  # binarisation of pasted mask probabilities (caller side)
    categories: List[Category] = field(default_factory=list)
    dataset: str = ""  # dataset whose metadata gave the categories

    @classmethod
    def from_cfg(cls, cfg: CfgNode, size_divisibility: int = 0) -> "ModelSpec":
        """Spec of a plain detector config; ``size_divisibility`` from the built backbone."""
        dataset, categories = categories_from_cfg(cfg)
        return cls(
            input_format=cfg.INPUT.FORMAT,
            min_size_test=int(cfg.INPUT.MIN_SIZE_TEST),
            max_size_test=int(cfg.INPUT.MAX_SIZE_TEST),
            pixel_mean=[float(v) for v in cfg.MODEL.PIXEL_MEAN],
            pixel_std=[float(v) for v in cfg.MODEL.PIXEL_STD],
            size_divisibility=int(size_divisibility),
            score_thresh_test=float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST),
            nms_thresh_test=float(cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST),
            detections_per_image=int(cfg.TEST.DETECTIONS_PER_IMAGE),
            mask_on=bool(cfg.MODEL.MASK_ON),
            categories=categories,
            dataset=dataset,
        )

    def to_dict(self) -> Dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict) -> "ModelSpec":
        d = dict(d)
        d["categories"] = [Category(**{**c, "color": tuple(c["color"])}) for c in d.get("categories", [])]
        return cls(**d)

    @property
    def class_names(self) -> List[str]:
        return [c.name for c in self.categories]


def categories_from_cfg(cfg: CfgNode) -> Tuple[str, List[Category]]:
    """(dataset name, categories) from the metadata of ``DATASETS.TEST[0]`` (else ``TRAIN[0]``):
    ``thing_classes``, ``thing_colors``, ``thing_dataset_id_to_contiguous_id``. Without usable
    metadata, generic names ``class_<i>``, ids i+1 and Detectron2's colormap, with a warning."""
    num_classes = int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)
    dataset = names[0] if names else ""
    meta = MetadataCatalog.get(dataset) if dataset else None
    classes = list(meta.get("thing_classes", [])) if meta is not None else []
    if len(classes) != num_classes:
        logger.warning(
            f"No category metadata with {num_classes} classes for dataset {dataset!r} "
            f"(found {len(classes)}): using generic class names"
        )
        palette = colormap(rgb=True, maximum=255)
        return dataset, [
            Category(i, i + 1, f"class_{i}", tuple(int(v) for v in palette[i % len(palette)]))
            for i in range(num_classes)
        ]
    palette = meta.get("thing_colors", None) or [tuple(int(v) for v in c) for c in colormap(rgb=True, maximum=255)]
    to_contiguous = meta.get("thing_dataset_id_to_contiguous_id", None) or {i + 1: i for i in range(num_classes)}
    to_dataset = {c: d for d, c in to_contiguous.items()}
    return dataset, [
        Category(i, int(to_dataset[i]), name, tuple(int(v) for v in palette[i % len(palette)]))
        for i, name in enumerate(classes)
    ]
