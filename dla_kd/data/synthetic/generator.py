"""Driver: renders pages and writes a COCO split.

On-disk layout (the same for both styles, mirroring PubLayNet's)::

    <out_dir>/<split>.json          COCO json (written last, atomically)
    <out_dir>/<split>/000000.png    page images; ``file_name`` in the json is relative to this folder

Page ``i`` of a split is drawn with its own RNG seeded from ``(seed, crc32(split), i)``, so a page
does not depend on how many pages are generated, and the same arguments give byte-identical json
and identical pixels.
"""

import json
import logging
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from ...utils.files import atomic_write, atomic_write_json
from .block import PAPER, Role, merge_grouped_regions
from .coco import annotatable, annotation_record, coco_categories
from .degrade import degrade, sample_degradation, skew_matrix, transform_points
from .layout import LETTER_PT, PageComposer, Placement
from .styles import StyleSpec, get_style

# (category id, polygon (N, 2) in image pixels)
Object = Tuple[int, np.ndarray]
JOURNAL_SUFFIX = ".pages.jsonl"
logger = logging.getLogger(__name__)


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


def _write_page(job: Tuple[str, Tuple[int, int], int, str, int, str]) -> Dict:
    """Render one page, save its PNG (atomically); return its journal entry: ``index``, COCO image
    ``record`` and ``annotations`` (ids 0: numbered when the split is assembled)."""
    style_name, image_size, seed, split, index, image_dir = job
    page = render_page(style_name, image_size, seed, split, index)
    file_name = f"{index:06d}.png"
    path = os.path.join(image_dir, file_name)
    atomic_write(path, lambda f: Image.fromarray(page.image).save(f, format="PNG", compress_level=3), durable=False)
    record = {"id": index + 1, "file_name": file_name, "width": image_size[0], "height": image_size[1]}
    annotations = [annotation_record(polygon, category_id, record["id"], 0) for category_id, polygon in page.objects]
    return {"index": index, "record": record, "annotations": annotations}


def journal_path(out_dir: str, split: str) -> str:
    """The journal of a split being generated: one line per finished page, removed at the end."""
    return os.path.join(out_dir, f"{split}{JOURNAL_SUFFIX}")


def _read_journal(path: str, header: Dict) -> Dict[int, Dict]:
    """index -> entry of the pages an interrupted call finished with the same settings (``header``).
    A journal of other settings is discarded (with a warning: its pages are redrawn); a last line
    cut by the interruption is ignored."""
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        lines = f.read().splitlines()
    if not lines or _loads(lines[0]) != {"header": header}:
        logger.warning(f"{path}: written for other settings than {header}; generating the split from scratch")
        os.remove(path)
        return {}
    entries = [e for e in map(_loads, lines[1:]) if e is not None]
    return {e["index"]: e for e in entries}


def _loads(line: str) -> Optional[Dict]:
    try:
        return json.loads(line)
    except ValueError:
        return None


def split_settings(data: Dict) -> Dict:
    """The settings a finished split was drawn with: ``style``, ``seed``, ``split``, ``num_images``
    and ``image_size`` (of its first page; ``None`` for an empty split), from its loaded json."""
    info, images = data.get("info", {}), data.get("images", [])
    size = [images[0]["width"], images[0]["height"]] if images else None
    return {"style": info.get("style"), "seed": info.get("seed"), "split": info.get("split"),
            "num_images": len(images), "image_size": size}


def requested_settings(style: str, num_images: int, seed: int, split: str = "train",
                       page_size: Optional[Tuple[int, int]] = None) -> Dict:
    """The settings of a split as :func:`split_settings` reads them back, for these arguments of
    :func:`generate_dataset`."""
    image_size = [int(v) for v in (page_size or get_style(style).page_size)]
    return {"style": style, "seed": seed, "split": split, "num_images": num_images, "image_size": image_size}


def settings_differences(found: Dict, wanted: Dict) -> str:
    """``"seed 0 (asked: 1), ..."`` for the settings in which ``found`` differs from ``wanted``
    (empty when none)."""
    return ", ".join(f"{k} {found[k]} (asked: {wanted[k]})" for k in wanted if found[k] != wanted[k])


# What generate_dataset does with a finished split of other settings in its place.
OTHER_SETTINGS = ("refuse", "overwrite", "keep")


def _finished_split(json_path: str, image_dir: str, wanted: Dict, other_settings: str) -> bool:
    """Whether ``json_path`` already holds the split to return (then nothing is drawn): the split of
    settings ``wanted`` with all its images, or, with ``other_settings`` "keep", any finished split
    (used as it is, with a warning naming the differences). A split of other settings is refused
    (``FileExistsError`` naming them) with "refuse"; else a split that is not returned is removed,
    to be drawn again (one of other settings with "overwrite", a complete one with lost images)."""
    if other_settings not in OTHER_SETTINGS:
        raise ValueError(f"other_settings must be one of {OTHER_SETTINGS}, got {other_settings!r}")
    if not os.path.exists(json_path):
        return False
    with open(json_path) as f:
        data = json.load(f)
    found = split_settings(data)
    if found != wanted:
        differences = settings_differences(found, wanted)
        if other_settings == "keep":
            logger.warning(f"{json_path}: drawn with other settings than the registered split: {differences}; "
                           "used as it is")
            return True
        if other_settings == "refuse":
            raise FileExistsError(
                f"{json_path}: a finished split of other settings is there: {differences}. Remove it, choose "
                f"another folder or split name, or overwrite it (--overwrite; other_settings='overwrite')"
            )
    else:
        missing = [img["file_name"] for img in data["images"]
                   if not os.path.isfile(os.path.join(image_dir, img["file_name"]))]
        if not missing:
            logger.info(f"{json_path}: the split is complete ({wanted['num_images']} pages); nothing drawn")
            return True
        logger.warning(f"{json_path}: {len(missing)} page images are missing (e.g. {missing[0]}); drawing the split again")
    os.remove(json_path)
    return False


def generate_dataset(
    style: str,
    num_images: int,
    out_dir: str,
    seed: int,
    split: str = "train",
    page_size: Optional[Tuple[int, int]] = None,
    show_progress: bool = True,
    num_workers: int = 0,
    other_settings: str = "refuse",
) -> str:
    """Generate ``num_images`` synthetic pages of ``style`` ("publaynet" or "doclaynet") into
    ``out_dir/<split>/`` and their COCO json ``out_dir/<split>.json``; return the json path.

    ``page_size`` is the image (width, height) in px (default: the style's, 612x792 for publaynet,
    768x768 for doclaynet). ``num_workers`` > 1 renders pages in that many processes (same output).
    A finished split of the same settings (style, seed, split, number and size of pages) with all
    its images is kept (nothing drawn); one of other settings is refused (``other_settings``
    "refuse"), drawn over ("overwrite") or used as it is, with a warning ("keep": the registry's
    choice for its splits, which may have been drawn smaller on purpose).
    The json is written last, so an interrupted run leaves none. Resumable: each finished page is
    appended to ``out_dir/<split>.pages.jsonl`` (fsynced; removed once the json is written), and a
    call with the same style, size, seed and split draws only the pages missing from it (same
    output as an uninterrupted call).
    """
    spec = get_style(style)
    wanted = requested_settings(style, num_images, seed, split, page_size)
    image_size = tuple(wanted["image_size"])
    json_path = os.path.join(out_dir, f"{split}.json")
    image_dir = os.path.join(out_dir, split)
    if _finished_split(json_path, image_dir, wanted, other_settings):
        return json_path
    os.makedirs(image_dir, exist_ok=True)
    header = {"style": style, "image_size": list(image_size), "seed": seed, "split": split}
    journal = journal_path(out_dir, split)
    entries = {i: e for i, e in _read_journal(journal, header).items()
               if i < num_images and os.path.isfile(os.path.join(image_dir, e["record"]["file_name"]))}
    if entries:
        logger.info(f"{journal}: resuming, {len(entries)} of {num_images} pages already drawn")
    jobs = [(style, image_size, seed, split, index, image_dir) for index in range(num_images) if index not in entries]
    executor = ProcessPoolExecutor(num_workers) if num_workers > 1 else None
    with executor or nullcontext(), open(journal, "a") as log:
        if log.tell() == 0:
            log.write(json.dumps({"header": header}) + "\n")
        results = executor.map(_write_page, jobs, chunksize=4) if executor else map(_write_page, jobs)
        for entry in tqdm(results, total=num_images, initial=len(entries), desc=f"{style}/{split}",
                          disable=not show_progress):
            line = json.dumps(entry)
            log.write(line + "\n")
            log.flush()
            os.fsync(log.fileno())
            entries[entry["index"]] = json.loads(line)  # as a resumed call reads it back
    images, annotations = [], []
    for index in range(num_images):
        images.append(entries[index]["record"])
        for ann in entries[index]["annotations"]:
            annotations.append({**ann, "id": len(annotations) + 1})
    data = {
        "info": {"description": f"dla-kd synthetic {style} pages", "style": style, "split": split, "seed": seed},
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(spec.name),
    }
    atomic_write_json(json_path, data, unique=True, separators=(",", ":"))
    os.remove(journal)
    return json_path
