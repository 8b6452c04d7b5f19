"""Driver: renders pages and writes a COCO split.

On-disk layout (the same for both styles, mirroring PubLayNet's)::

    <out_dir>/<split>.json          COCO json (written last, atomically)
    <out_dir>/<split>/000000.png    page images; ``file_name`` in the json is relative to this folder

Page ``i`` of a split is drawn with its own RNG seeded from ``(seed, crc32(split), i)``, so a page
does not depend on how many pages are generated, and the same arguments give byte-identical json
and identical pixels.
"""

import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from .block import PAPER, Role, merge_grouped_regions
from .coco import annotatable, annotation_record, coco_categories, write_json_atomic
from .degrade import degrade, sample_degradation, skew_matrix, transform_points
from .layout import LETTER_PT, PageComposer, Placement
from .styles import StyleSpec, get_style

# (category id, polygon (N, 2) in image pixels)
Object = Tuple[int, np.ndarray]


@dataclass
class Page:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    objects: List[Object]


def page_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The RNG of page ``index`` of ``split``."""
    return np.random.default_rng([seed, zlib.crc32(split.encode("utf-8")), index])


def page_frame(style: StyleSpec, image_size: Tuple[int, int], rng: np.random.Generator) -> Tuple[int, int, int, int]:
    """(page width, page height, x offset, y offset) of the document page inside the image:
    the whole image, or the largest letter-proportioned page centred in it."""
    width, height = image_size
    if not style.letter_page:
        return width, height, 0, 0
    short, long = LETTER_PT
    aspect = short / long if rng.random() < style.landscape_prob else long / short  # height / width
    page_h = int(min(height, width * aspect))
    page_w = int(min(width, page_h / aspect))
    return page_w, page_h, (width - page_w) // 2, (height - page_h) // 2


def _block_objects(
    placement: Placement,
    category_ids: Dict[Role, Optional[int]],
    merge_lists: bool,
    matrix: np.ndarray,
    page_rect: Tuple[int, int, int, int],
) -> Optional[List[Object]]:
    """Annotated objects of a placed block in image pixels (skewed with ``matrix``, then clipped to
    ``page_rect``); None when one of them would be degenerate, so the block must not be drawn."""
    regions = [r.shifted(placement.x, placement.y) for r in placement.block.regions]
    if merge_lists:
        regions = merge_grouped_regions(regions)
    objects = []
    for region in regions:
        category_id = category_ids[region.role]
        if category_id is None:
            continue
        polygon = annotatable(transform_points(matrix, region.as_polygon()) + page_rect[:2], page_rect)
        if polygon is None:
            return None
        objects.append((category_id, polygon))
    return objects


def _draw(placements: Sequence[Placement], width: int, height: int) -> np.ndarray:
    """White (height, width, 3) page with the blocks' tiles composited by darkening."""
    page = np.full((height, width, 3), PAPER, np.uint8)
    for p in placements:
        tile = np.asarray(p.block.image)
        x0, y0 = max(0, p.x), max(0, p.y)
        x1, y1 = min(width, p.x + tile.shape[1]), min(height, p.y + tile.shape[0])
        if x1 > x0 and y1 > y0:
            page[y0:y1, x0:x1] = np.minimum(page[y0:y1, x0:x1], tile[y0 - p.y : y1 - p.y, x0 - p.x : x1 - p.x])
    return page


def render_page(style_name: str, image_size: Tuple[int, int], seed: int, split: str, index: int) -> Page:
    """Compose, draw and degrade page ``index``; objects are in image pixels."""
    style = get_style(style_name)
    rng = page_rng(seed, split, index)
    genre = style.sample_genre(rng)
    page_w, page_h, off_x, off_y = page_frame(style, image_size, rng)
    placements = PageComposer(rng, genre, page_w, page_h).compose()
    degradation = sample_degradation(rng)
    matrix = skew_matrix(degradation.angle, page_w, page_h)
    page_rect = (off_x, off_y, off_x + page_w, off_y + page_h)
    category_ids = style.category_ids()
    drawn, objects = [], []
    for placement in placements:
        block_objects = _block_objects(placement, category_ids, style.merge_list_items, matrix, page_rect)
        if block_objects is not None:
            drawn.append(placement)
            objects.extend(block_objects)
    image = np.full((image_size[1], image_size[0], 3), PAPER, np.uint8)
    image[off_y : off_y + page_h, off_x : off_x + page_w] = degrade(_draw(drawn, page_w, page_h), degradation)
    return Page(image, objects)


def _write_page(job: Tuple[str, Tuple[int, int], int, str, int, str]) -> Tuple[Dict, List[Object]]:
    """Render one page, save its PNG; return its COCO image record and objects."""
    style_name, image_size, seed, split, index, image_dir = job
    page = render_page(style_name, image_size, seed, split, index)
    file_name = f"{index:06d}.png"
    Image.fromarray(page.image).save(os.path.join(image_dir, file_name), format="PNG", compress_level=3)
    record = {"id": index + 1, "file_name": file_name, "width": image_size[0], "height": image_size[1]}
    return record, page.objects


def generate_dataset(
    style: str,
    num_images: int,
    out_dir: str,
    seed: int,
    split: str = "train",
    page_size: Optional[Tuple[int, int]] = None,
    show_progress: bool = True,
    num_workers: int = 0,
) -> str:
    """Generate ``num_images`` synthetic pages of ``style`` ("publaynet" or "doclaynet") into
    ``out_dir/<split>/`` and their COCO json ``out_dir/<split>.json``; return the json path.

    ``page_size`` is the image (width, height) in px (default: the style's, 612x792 for publaynet,
    768x768 for doclaynet). ``num_workers`` > 1 renders pages in that many processes (same output).
    An existing json of the split is removed first, so an interrupted run leaves none.
    """
    spec = get_style(style)
    image_size = tuple(int(v) for v in (page_size or spec.page_size))
    json_path = os.path.join(out_dir, f"{split}.json")
    image_dir = os.path.join(out_dir, split)
    os.makedirs(image_dir, exist_ok=True)
    if os.path.exists(json_path):
        os.remove(json_path)
    jobs = [(style, image_size, seed, split, index, image_dir) for index in range(num_images)]
    images, annotations = [], []
    executor = ProcessPoolExecutor(num_workers) if num_workers > 1 else None
    with executor or nullcontext():
        results = executor.map(_write_page, jobs, chunksize=4) if executor else map(_write_page, jobs)
        for record, objects in tqdm(results, total=num_images, desc=f"{style}/{split}", disable=not show_progress):
            images.append(record)
            for category_id, polygon in objects:
                annotations.append(annotation_record(polygon, category_id, record["id"], len(annotations) + 1))
    data = {
        "info": {"description": f"dla-kd synthetic {style} pages", "style": style, "split": split, "seed": seed},
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(spec.name),
    }
    write_json_atomic(data, json_path)
    return json_path
