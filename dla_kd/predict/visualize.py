"""Layout pictures: detections drawn on the page with Detectron2's ``Visualizer``, each box/mask
in its category's colour from the category table (no jitter), labelled "<name> <score>"."""
import numpy as np
from detectron2.structures import Instances
from detectron2.utils.visualizer import Visualizer

from ..export.spec import ModelSpec


def draw_detections(image_rgb: np.ndarray, instances: Instances, spec: ModelSpec) -> np.ndarray:
    """(H, W, 3) uint8 RGB page + its detections (page pixels) -> (H, W, 3) uint8 RGB picture."""
    classes = instances.pred_classes.cpu().numpy()
    scores = instances.scores.cpu().numpy()
    categories = [spec.categories[int(c)] for c in classes]
    visualizer = Visualizer(image_rgb, metadata=None, scale=1.0)
    drawn = visualizer.overlay_instances(
        boxes=instances.pred_boxes.tensor.cpu().numpy(),
        labels=[f"{c.name} {s:.0%}" for c, s in zip(categories, scores)],
        masks=list(instances.pred_masks.cpu().numpy()) if instances.has("pred_masks") and len(instances) else None,
        assigned_colors=[tuple(v / 255.0 for v in c.color) for c in categories],
    )
    return drawn.get_image()
