"""Tiny random-init models and batches shared by the tests (CPU, a fraction of a second per step)."""
import importlib.util
import os
from typing import List, Sequence

import numpy as np
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, PolygonMasks
from PIL import Image

from dla_kd.engine import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "synthetic", "mask_rcnn_R_18_GN_tiny_doclaynet.yaml")
TINY_CASCADE = os.path.join(REPO, "configs", "synthetic", "cascade_mask_rcnn_R_18_GN_tiny_doclaynet.yaml")

# Shrinks the tiny CPU configs further: narrow FPN/heads, few RoIs, small images.
MICRO = [
    "MODEL.DEVICE", "cpu",
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "128",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "128",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "64",
    "INPUT.MIN_SIZE_TRAIN", "(128,)",
    "INPUT.MAX_SIZE_TRAIN", "160",
    "INPUT.MIN_SIZE_TEST", "128",
    "INPUT.MAX_SIZE_TEST", "160",
    "DATALOADER.NUM_WORKERS", "0",
]


def write_config(path: str, base: str = TINY, opts: Sequence[str] = ()) -> str:
    """Write ``base`` + MICRO + ``opts`` as a standalone yaml (e.g. a teacher config)."""
    cfg = load_config(base, MICRO + list(opts), freeze=False)
    with open(path, "w") as f:
        f.write(cfg.dump())
    return path


def save_random_weights(config: str, path: str, seed: int = 0) -> str:
    """Build ``config`` with random weights (``seed``) and save it like a trained checkpoint."""
    torch.manual_seed(seed)
    torch.save({"model": build_model(load_config(config)).state_dict()}, path)
    return path


def distill_cfg(teacher_config: str, losses: Sequence[str], base: str = TINY, opts: Sequence[str] = (),
                teacher_weights: str = ""):
    """A DistillGeneralizedRCNN config: student ``base`` (+ MICRO), teacher ``teacher_config``."""
    extra = [
        "MODEL.META_ARCHITECTURE", "DistillGeneralizedRCNN",
        "DISTILL.TEACHER.CONFIG", teacher_config,
        "DISTILL.TEACHER.WEIGHTS", teacher_weights,
        "DISTILL.TEACHER.ALLOW_RANDOM_INIT", str(not teacher_weights),
        "DISTILL.LOSSES", str(list(losses)),
        "DISTILL.REVIEWKD.NORM", "GN",
    ]
    return load_config(base, MICRO + extra + list(opts))


def fake_batch(n: int = 2, h: int = 128, w: int = 160, seed: int = 0) -> List[dict]:
    """``n`` noisy images (3, h, w) in [0, 255] with three boxes/polygons each (classes 0, 9, 3)."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(n):
        boxes = torch.tensor([[10, 10, 80, 40], [20, 50, 150, 120], [5, 5, 30, 20]], dtype=torch.float32)
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = torch.tensor([0, 9, 3])
        inst.gt_masks = PolygonMasks([[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in boxes.tolist()])
        image = torch.randint(0, 256, (3, h, w), generator=g).float()
        batch.append({"image": image, "instances": inst, "height": h, "width": w})
    return batch


def load_tool(name: str, folder: str = "tools"):
    """The module ``<folder>/<name>.py`` (``folder`` relative to the repository: ``tools`` or a
    project's, e.g. ``projects/kd_benchmark/tools``), loaded in this process (its ``main`` not run)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(REPO, folder, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tool_main(name: str, folder: str = "tools"):
    """``main(argv) -> exit status`` of ``<folder>/<name>.py``, run in this process."""
    return load_tool(name, folder).main


def onnx_nodes(graph):
    """All nodes of an ONNX graph, those of If/Loop subgraphs included."""
    import onnx

    for node in graph.node:
        yield node
        for a in node.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                yield from onnx_nodes(sub)


def save_pages(folder, sizes, seed=0):
    """Noise pages of (H, W) ``sizes`` saved as PNG; returns their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for k, (h, w) in enumerate(sizes):
        path = os.path.join(folder, f"page{k}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def make_pdf(path, sizes, seed=1):
    """A PDF with one noise page per (H, W) pixel size, 72 dpi: page size in points = pixels."""
    rng = np.random.default_rng(seed)
    pages = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]
    pages[0].save(path, "PDF", resolution=72.0, save_all=True, append_images=pages[1:])
    return path
