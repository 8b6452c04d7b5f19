"""Small COCO-layout datasets written to disk, shared by the dataset tests."""
import json
import os

import numpy as np
from PIL import Image

from dla_kd.data import PUBLAYNET_CATEGORIES


def write_image(path, size=(60, 80)):
    """A white RGB image of ``size`` (width, height) at ``path`` (format from the extension)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 255, np.uint8)).save(path)


def publaynet_like(root, annotations=None, images=None, write_images=True):
    """A 2-image PubLayNet-layout val split under ``root``; returns the json path."""
    images = images or [
        {"id": 1, "file_name": "a.png", "width": 60, "height": 80},
        {"id": 2, "file_name": "b.png", "width": 60, "height": 80},
    ]
    annotations = annotations if annotations is not None else [
        {"id": 10, "image_id": 1, "category_id": 1, "bbox": [5, 5, 30, 10], "area": 300, "iscrowd": 0,
         "segmentation": [[5, 5, 35, 5, 35, 15, 5, 15]]},
        {"id": 11, "image_id": 2, "category_id": 5, "bbox": [10, 20, 40, 40], "area": 1600, "iscrowd": 0,
         "segmentation": [[10, 20, 50, 20, 50, 60, 10, 60]]},
    ]
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": c["id"], "name": c["name"]} for c in PUBLAYNET_CATEGORIES]}
    os.makedirs(os.path.join(root, "publaynet", "val"), exist_ok=True)
    if write_images:
        for img in images:
            write_image(os.path.join(root, "publaynet", "val", img["file_name"]))
    path = os.path.join(root, "publaynet", "val.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path
