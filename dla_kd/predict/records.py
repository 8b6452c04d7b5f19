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
         "area": 1234.0,                     # mask pixels (box area: "boxes" output, model without masks)
         "segmentation": {"size": [h, w], "counts": str}   # "rle": COCO compressed RLE (default)
                         [[x1, y1, x2, y2, ...], ...]      # "polygons": contours, page pixels
                         null                              # "boxes", or a model without masks
        }, ...
      ]
    }

Output formats (``OUTPUT_FORMATS``) and their size on a 150-dpi page with 100 detections: "rle"
(default) a few kB per mask, pycocotools decodes it; "polygons" every contour point, MBs per page;
"boxes" no masks at all (and no mask pasting: the fastest).
"""
from typing import Dict, List, Optional

import numpy as np
from detectron2.structures import Instances

from ..inference.spec import ModelSpec
from .segmentation import crop_polygons, crop_rle

OUTPUT_FORMATS = ("rle", "polygons", "boxes")
DEFAULT_OUTPUT_FORMAT = "rle"


def check_output_format(output_format: str) -> str:
    """``output_format`` if it is one of ``OUTPUT_FORMATS``, else ValueError."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"Unknown output format {output_format!r}; choose from {OUTPUT_FORMATS}")
    return output_format


def encode_mask(masks, k: int, output_format: str):
    """(mask pixels, segmentation) of detection ``k`` of ``masks`` (:class:`PageMasks`), pasted
    alone into its box region."""
    crop, offset = masks.crop(int(k))
    if output_format == "rle":
        return float(crop.sum()), crop_rle(crop, offset, masks.image_size)
    return float(crop.sum()), [poly.tolist() for poly in crop_polygons(crop, offset)]  # pixel centres: x.5


def page_record(
    instances: Instances, spec: ModelSpec, file_name: str, page: Optional[int] = None,
    dpi: Optional[float] = None, backend: str = "", output_format: str = DEFAULT_OUTPUT_FORMAT,
) -> Dict:
    """The JSON record (schema above) of the detections ``instances`` on a page (page pixels,
    contiguous classes, ``pred_masks`` (:class:`dla_kd.inference.masks.PageMasks`) if any); one
    mask at a time is pasted, and only into its box region."""
    h, w = (int(v) for v in instances.image_size)
    boxes = instances.pred_boxes.tensor.cpu().numpy().astype(float)
    scores = instances.scores.cpu().numpy().astype(float)
    classes = instances.pred_classes.cpu().numpy()
    check_output_format(output_format)
    masks = instances.pred_masks if instances.has("pred_masks") and output_format != "boxes" else None
    detections: List[Dict] = []
    for k in np.argsort(-scores, kind="stable"):
        x0, y0, x1, y1 = boxes[k]
        category = spec.categories[int(classes[k])]
        area, segmentation = encode_mask(masks, k, output_format) if masks is not None else ((x1 - x0) * (y1 - y0), None)
        detections.append({
            "id": len(detections) + 1,
            "category_id": category.id,
            "category_name": category.name,
            "bbox": [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)],
            "score": round(float(scores[k]), 6),
            "area": round(area, 3),
            "segmentation": segmentation,
        })
    return {
        "file_name": file_name, "page": page, "dpi": dpi, "height": h, "width": w, "backend": backend,
        "categories": [{"id": c.id, "name": c.name} for c in spec.categories],
        "detections": detections,
    }
