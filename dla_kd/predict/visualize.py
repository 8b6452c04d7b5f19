"""Layout pictures: detections drawn on the page, each box/mask in its category's colour from the
category table (no jitter), labelled "<name> <score>".

Masks are blended into the picture one detection at a time, inside its crop (largest box first,
as Detectron2's ``Visualizer`` orders them), never as page-sized arrays nor as matplotlib
polygons (thousands of them for ragged masks); boxes and labels are drawn by Detectron2's
``Visualizer``. A page whose longest side exceeds ``max_size`` is drawn scaled down to it (masks
pasted at the picture's resolution): a 10000 x 8000 picture costs GBs of matplotlib canvas.
"""
import cv2
import numpy as np
from detectron2.structures import Instances
from detectron2.utils.visualizer import Visualizer

from ..inference.spec import ModelSpec

MASK_ALPHA = 0.5  # as Visualizer.overlay_instances fills masks
DEFAULT_VIS_MAX_SIZE = 4096  # longest side of a picture, pixels (0: the page size)


def blend_masks(picture: np.ndarray, masks, colors) -> np.ndarray:
    """Blend mask ``k`` of ``masks`` (:class:`PageMasks` on the picture) in ``colors[k]`` (RGB
    0-255) into ``picture`` ((H, W, 3) uint8, modified), the largest box first."""
    boxes = masks.boxes.cpu().numpy()
    for k in np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable"):
        crop, (x0, y0) = masks.crop(int(k))
        region = picture[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]]
        colour = np.empty_like(region)
        colour[:] = colors[k]
        blended = cv2.addWeighted(region, 1 - MASK_ALPHA, colour, MASK_ALPHA, 0)
        cv2.copyTo(blended, crop.view(np.uint8), dst=region)  # in place, mask pixels only
    return picture


def draw_detections(image_rgb: np.ndarray, instances: Instances, spec: ModelSpec,
                    max_size: int = DEFAULT_VIS_MAX_SIZE) -> np.ndarray:
    """(H, W, 3) uint8 RGB page + its detections (page pixels) -> uint8 RGB picture: (H, W, 3),
    or scaled down so that its longest side is ``max_size`` (0: never)."""
    height, width = image_rgb.shape[:2]
    scale = min(max_size / max(height, width), 1.0) if max_size else 1.0
    size = (max(round(height * scale), 1), max(round(width * scale), 1))
    picture = cv2.resize(image_rgb, size[::-1], interpolation=cv2.INTER_AREA) if scale < 1 else image_rgb.copy()
    boxes = instances.pred_boxes.tensor.cpu().numpy() * np.array([size[1] / width, size[0] / height] * 2)
    categories = [spec.categories[int(c)] for c in instances.pred_classes.cpu().numpy()]
    if instances.has("pred_masks") and len(instances):
        blend_masks(picture, instances.pred_masks.resized(*size), [c.color for c in categories])
    visualizer = Visualizer(picture, metadata=None, scale=1.0)
    drawn = visualizer.overlay_instances(
        boxes=boxes,
        labels=[f"{c.name} {s:.0%}" for c, s in zip(categories, instances.scores.cpu().numpy())],
        assigned_colors=[tuple(v / 255.0 for v in c.color) for c in categories],
    )
    picture = drawn.get_image()
    # The figure, its canvas and axes reference each other: the picture's copies they hold (and the
    # RGBA buffer) would wait for a full garbage collection, some 100 MB per large page.
    drawn.fig.clear()
    drawn.canvas.renderer = None
    return picture
