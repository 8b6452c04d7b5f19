"""Blocks: rendered tiles with their annotated regions, the unit of page composition.

A builder draws its content on a white RGB tile and marks regions on it. A region is either a
*layout rectangle* that :func:`make_block` shrinks to the tight extent of the ink inside it (text
blocks end up as the union of their line boxes, tables as their rules and cells), or an exact
*polygon* (shaped pictures). Regions whose rectangle holds no ink are dropped. Coordinates are
pixels relative to the tile's top-left corner; rectangles are ``(x0, y0, x1, y1)`` pixel edges.
"""

from dataclasses import dataclass
from enum import Enum
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from dla_kd.data.categories import DOCLAYNET_CATEGORIES

Rect = Tuple[float, float, float, float]
PAPER = (255, 255, 255)
# Grey levels (0..255) darker than this count as ink when tightening regions.
_INK_THRESHOLD = 235
_INK_LUT = [255 if v < _INK_THRESHOLD else 0 for v in range(256)]


class Role(str, Enum):
    """What a region is on the page. The values are DocLayNet's category names normalised
    (lower case, ``-`` -> ``_``); each style maps roles to its own categories."""

    CAPTION = "caption"
    FOOTNOTE = "footnote"
    FORMULA = "formula"
    LIST_ITEM = "list_item"
    PAGE_FOOTER = "page_footer"
    PAGE_HEADER = "page_header"
    PICTURE = "picture"
    SECTION_HEADER = "section_header"
    TABLE = "table"
    TEXT = "text"
    TITLE = "title"

    @classmethod
    def of_category_name(cls, name: str) -> "Role":
        return cls(name.lower().replace("-", "_"))


assert {Role.of_category_name(c["name"]) for c in DOCLAYNET_CATEGORIES} == set(Role)


@dataclass
class Region:
    """An annotated part of a block: ``rect`` (tightened to ink) or an exact ``polygon`` ((N, 2)
    float array). ``group`` ties regions that some styles annotate as one object (the items of
    one list)."""

    role: Role
    rect: Optional[Rect] = None
    polygon: Optional[np.ndarray] = None
    group: Optional[int] = None

    def shifted(self, dx: float, dy: float) -> "Region":
        if self.polygon is not None:
            return Region(self.role, polygon=self.polygon + (dx, dy), group=self.group)
        x0, y0, x1, y1 = self.rect
        return Region(self.role, rect=(x0 + dx, y0 + dy, x1 + dx, y1 + dy), group=self.group)

    def as_polygon(self) -> np.ndarray:
        """The region outline as an (N, 2) float array (the rectangle's corners for rect regions)."""
        if self.polygon is not None:
            return np.asarray(self.polygon, dtype=float)
        x0, y0, x1, y1 = self.rect
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


@dataclass
class Block:
    """A rendered tile (``image``, white background) and its regions in tile coordinates."""

    image: Image.Image
    regions: List[Region]

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def new_tile(width: float, height: float) -> Tuple[Image.Image, ImageDraw.ImageDraw]:
    """A white RGB tile of at least 1x1 px and a drawing context on it."""
    image = Image.new("RGB", (max(1, int(np.ceil(width))), max(1, int(np.ceil(height)))), PAPER)
    return image, ImageDraw.Draw(image)


def ink_extent(image: Image.Image, rect: Rect) -> Optional[Rect]:
    """Tight box (integer pixel edges) of the ink, pixels darker than the threshold, inside
    ``rect`` of ``image``; None when there is no ink."""
    x0, y0 = max(0, int(rect[0])), max(0, int(rect[1]))
    x1, y1 = min(image.width, int(np.ceil(rect[2]))), min(image.height, int(np.ceil(rect[3])))
    if x1 <= x0 or y1 <= y0:
        return None
    box = image.crop((x0, y0, x1, y1)).convert("L").point(_INK_LUT).getbbox()
    if box is None:
        return None
    return (x0 + box[0], y0 + box[1], x0 + box[2], y0 + box[3])


def make_block(image: Image.Image, regions: Sequence[Region]) -> Block:
    """Block with rectangle regions tightened to their ink; inkless regions are dropped."""
    kept = []
    for region in regions:
        if region.polygon is not None:
            kept.append(region)
            continue
        tight = ink_extent(image, region.rect)
        if tight is not None:
            kept.append(Region(region.role, rect=tight, group=region.group))
    return Block(image, kept)


def stack_blocks(blocks: Sequence[Block], gap: float, align: str = "center") -> Block:
    """Blocks stacked top to bottom with ``gap`` px between them, aligned "left" or "center" in
    the widest one's width; regions are moved along."""
    width = max(b.width for b in blocks)
    height = sum(b.height for b in blocks) + gap * (len(blocks) - 1)
    image, _ = new_tile(width, height)
    regions, top = [], 0.0
    for b in blocks:
        dx, dy = (0 if align == "left" else (width - b.width) // 2), int(round(top))
        image.paste(b.image, (dx, dy))
        regions.extend(r.shifted(dx, dy) for r in b.regions)
        top += b.height + gap
    return Block(image, regions)


def merge_grouped_regions(regions: Sequence[Region]) -> List[Region]:
    """Regions with the same ``group`` replaced by one rectangle region covering them all (at the
    position of the group's first region); ungrouped regions are kept as they are."""
    merged: List[Region] = []
    index_of_group = {}
    for region in regions:
        if region.group is None:
            merged.append(region)
            continue
        polygon = region.as_polygon()
        box = (*polygon.min(axis=0), *polygon.max(axis=0))
        k = index_of_group.get(region.group)
        if k is None:
            index_of_group[region.group] = len(merged)
            merged.append(Region(region.role, rect=box, group=region.group))
        else:
            x0, y0, x1, y1 = merged[k].rect
            merged[k] = Region(
                region.role,
                rect=(min(x0, box[0]), min(y0, box[1]), max(x1, box[2]), max(y1, box[3])),
                group=region.group,
            )
    return merged
