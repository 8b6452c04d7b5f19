"""The teacher's features of a batch, computed image by image so that an image's targets do not
depend on the other images of its batch.

A batched forward pads every image to the batch's largest one. With GroupNorm or attention in
the teacher (and through every conv near the border), an image's features then depend on how
much padding its batch partners force on it, so they change from epoch to epoch and a cached
feature can never equal a live one. Here each image is padded only to the common size
constraints and run on its own (images of the same padded size share one forward: every op of
an eval-mode detector backbone is per sample), and its levels are pasted top-left into zero maps
of the batch's size. Feature losses read only the cells covering the image
(``DistillContext.valid_mask``) and ROI heads pool inside the image, so the zeros are never
compared. The feature cache stores exactly these per-image features: cached == live.
"""
from collections import defaultdict
from typing import Callable, Dict, List, Sequence

import torch
from detectron2.structures import ImageList

PerImage = List[Dict[str, torch.Tensor]]


def pad_each(images: Sequence[torch.Tensor], padding: Dict[str, int]) -> List[torch.Tensor]:
    """Each normalised (3, h, w) image padded alone under ``padding`` (``ImageList``
    ``padding_constraints``) -> (3, h', w') float32."""
    return [ImageList.from_tensors([x.float()], padding_constraints=padding).tensor[0] for x in images]


def per_image_features(
    images: Sequence[torch.Tensor], backbone: Callable[[torch.Tensor], Dict[str, torch.Tensor]], levels: Sequence[str]
) -> PerImage:
    """``levels`` of ``backbone`` for each image alone.

    images: (3, h_i', w_i') padded (:func:`pad_each`); images of equal size go through one
    ``backbone`` call on their (n, 3, h', w') stack. Returns per image name -> (C, h_l, w_l).
    """
    groups = defaultdict(list)
    for i, image in enumerate(images):
        groups[tuple(image.shape)].append(i)
    out: PerImage = [{} for _ in images]
    for members in groups.values():
        feats = backbone(torch.stack([images[i] for i in members]))
        for j, i in enumerate(members):
            out[i] = {k: feats[k][j] for k in levels}
    return out


def paste(per_image: PerImage) -> Dict[str, torch.Tensor]:
    """Per-image name -> (C, h_l, w_l) features -> batch name -> (N, C, H_l, W_l) float32: each
    image top-left, zeros elsewhere. H_l, W_l: the largest image's, i.e. the level's size for
    the padded batch (every padded size is a multiple of the common size divisibility)."""
    out = {}
    for level in per_image[0]:
        maps = [feats[level] for feats in per_image]
        h = max(m.shape[1] for m in maps)
        w = max(m.shape[2] for m in maps)
        batch = maps[0].new_zeros((len(maps), maps[0].shape[0], h, w), dtype=torch.float32)
        for i, m in enumerate(maps):
            batch[i, :, : m.shape[1], : m.shape[2]] = m.float()
        out[level] = batch
    return out
