"""The JSON written for every page: COCO-style detections, identical for every backend.

::

    {
      "file_name": "/abs/path/doc.pdf",     # the source file
      "page": 3,                             # 1-based PDF page; null for an image file
      "dpi": 150,                            # PDF render resolution; null for an image file
      "height": 1650, "width": 1275,         # page image size: the frame of bbox/segmentation
      "backend": "pytorch" | "torchscript" | "onnx",
      "categories": [{"id": 1, "name": "Caption"}, ...],           # dataset ids and names
      "detections": [
        {"id": 1,                            # 1-based, by decreasing score
         "category_id": 10,                  # dataset category id (as in the dataset's COCO json)
         "category_name": "Text",
         "bbox": [x, y, w, h],               # XYWH, page pixels
         "score": 0.93,
         "area": 1234.0,                     # mask pixels (box area without masks)
         "segmentation": [[x1, y1, x2, y2, ...], ...]   # polygons, or RLE {"size": [h, w], "counts": str},
        }, ...                               # or null for a model without masks
      ]
    }
"""
from typing import Dict, List, Optional

import numpy as np
from detectron2.structures import Instances
from detectron2.utils.visualizer import GenericMask

from ..export.spec import ModelSpec

MASK_FORMATS = ("polygon", "rle")


def encode_mask(mask: np.ndarray, mask_format: str):
    """(H, W) bool mask -> polygons ``[[x, y, ...], ...]`` (outer contours, >= 3 points each, via
    Detectron2's ``GenericMask``) or a COCO RLE ``{"size": [H, W], "counts": str}``."""
    if mask_format == "rle":
        import pycocotools.mask as mask_util

        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    if mask_format == "polygon":
        h, w = mask.shape
        return [[round(float(v), 2) for v in poly] for poly in GenericMask(mask.astype(np.uint8), h, w).polygons]
    raise ValueError(f"Unknown mask format {mask_format!r}; choose from {MASK_FORMATS}")


def page_record(
    instances: Instances, spec: ModelSpec, file_name: str, page: Optional[int] = None,
    dpi: Optional[float] = None, backend: str = "", mask_format: str = "polygon",
) -> Dict:
    """The JSON record (schema above) of the detections ``instances`` on a page (page pixels,
    contiguous classes, ``pred_masks`` (N, H, W) bool if any)."""
    h, w = (int(v) for v in instances.image_size)
    boxes = instances.pred_boxes.tensor.cpu().numpy().astype(float)
    scores = instances.scores.cpu().numpy().astype(float)
    classes = instances.pred_classes.cpu().numpy()
    masks = instances.pred_masks.cpu().numpy() if instances.has("pred_masks") else None
    detections: List[Dict] = []
    for k in np.argsort(-scores, kind="stable"):
        x0, y0, x1, y1 = boxes[k]
        category = spec.categories[int(classes[k])]
        detections.append({
            "id": len(detections) + 1,
            "category_id": category.id,
            "category_name": category.name,
            "bbox": [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)],
            "score": round(float(scores[k]), 6),
            "area": float(masks[k].sum()) if masks is not None else round((x1 - x0) * (y1 - y0), 3),
            "segmentation": encode_mask(masks[k], mask_format) if masks is not None else None,
        })
    return {
        "file_name": file_name, "page": page, "dpi": dpi, "height": h, "width": w, "backend": backend,
        "categories": [{"id": c.id, "name": c.name} for c in spec.categories],
        "detections": detections,
    }
