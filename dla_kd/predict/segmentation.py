"""One detection's mask, given as its crop on the page (:meth:`dla_kd.inference.masks.PageMasks.crop`),
as COCO segmentation of the whole page: compressed RLE or polygons. Work and memory scale with the
crop, not with the page: the same output as encoding the page-sized mask, without making it."""
from typing import List, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.utils.visualizer import GenericMask


def crop_rle(crop: np.ndarray, offset: Tuple[int, int], page_size: Tuple[int, int]) -> dict:
    """COCO compressed RLE ``{"size": [H, W], "counts": str}`` of the page mask that is ``crop``
    ((h, w) bool) at ``offset`` (x0, y0) and False elsewhere; equal to ``pycocotools.mask.encode``
    of that page mask. Runs go down the page columns (column-major, as COCO does)."""
    height, width = (int(v) for v in page_size)
    x0, y0 = offset
    h = crop.shape[0]
    columns = np.zeros((crop.shape[1], h + 2), bool)  # crop columns, a False above and below each
    columns[:, 1:-1] = crop.T
    flat = columns.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # run starts and (exclusive) ends, alternating
    col, row = np.divmod(change, h + 2)
    edges = (x0 + col) * height + y0 + row - 1  # in the page, column-major
    starts, ends = edges[0::2], edges[1::2]
    if len(starts):  # a run down to the page bottom goes on at the top of the next column
        joined = starts[1:] == ends[:-1]
        starts, ends = starts[np.r_[True, ~joined]], ends[np.r_[~joined, True]]
    counts = np.diff(np.r_[0, np.stack([starts, ends], 1).ravel(), height * width])
    if len(counts) > 1 and counts[-1] == 0:  # the mask ends on the last pixel: no final empty run
        counts = counts[:-1]
    rle = mask_util.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def crop_polygons(crop: np.ndarray, offset: Tuple[int, int]) -> List[np.ndarray]:
    """Outer and inner contours (>= 3 points each, Detectron2's ``GenericMask``) of the crop, as
    flat [x, y, ...] arrays in page pixels; the same as those of the page mask."""
    h, w = crop.shape
    shift = np.asarray(offset, dtype=float)
    return [(p.reshape(-1, 2) + shift).ravel() for p in GenericMask(crop.astype(np.uint8), h, w).polygons]


def simplify_polygon(polygon: np.ndarray, tolerance: float) -> np.ndarray:
    """The closed polygon (flat [x, y, ...], >= 3 points) with fewer points: Douglas-Peucker
    (``cv2.approxPolyDP``), every dropped point within ``tolerance`` pixels of the result. A
    traced rectangle of layout (hundreds of contour points) comes back as its 4 corners. The
    polygon itself when ``tolerance`` is 0 or fewer than 3 points would remain."""
    if tolerance <= 0:
        return polygon
    points = np.asarray(polygon, dtype=np.float32).reshape(-1, 1, 2)
    simple = cv2.approxPolyDP(points, float(tolerance), True).reshape(-1)
    return simple.astype(float) if len(simple) >= 6 else np.asarray(polygon, dtype=float)
