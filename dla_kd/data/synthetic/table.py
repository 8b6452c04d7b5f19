"""Tables: a label column plus numeric columns, drawn in one of several rule styles:

* ``grid``: every row and column ruled, with an outer border;
* ``booktabs``: only horizontal rules (thick top/bottom, thin under the header);
* ``unruled``: aligned columns only (sometimes one rule under the header);
* ``shaded``: a filled header band, optionally zebra-striped rows (report style).

Sizes are pixels. The TABLE region is the tight ink extent of the whole grid.
"""

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from . import text
from .block import Block, Region, Role, make_block, new_tile
from .fonts import Face, draw_text, font_for, text_length
from .typeset import INK

TABLE_STYLES = ("grid", "booktabs", "unruled", "shaded")
_HEADER_FILLS = ((31, 56, 100), (0, 82, 147), (210, 215, 222), (225, 225, 225), (120, 20, 40))


def _fits(font, label: str, width: float) -> str:
    """``label`` cut word by word until it fits ``width`` px (at least one word is kept)."""
    words = label.split()
    while len(words) > 1 and text_length(font, " ".join(words)) > width:
        words.pop()
    return " ".join(words)


@dataclass
class _Table:
    """What a table holds, in pixels: cell padding, row and header heights, the row labels with
    their indents, the numeric columns (header first) and the column widths (label column first)."""

    pad: float
    row_h: float
    header_h: float
    labels: List[str]
    indents: List[float]
    columns: List[List[str]]
    widths: List[float]


def table_block(rng: np.random.Generator, face: Face, width: float, max_height: float, style: str) -> Optional[Block]:
    """A table no wider than ``width`` and no taller than ``max_height`` (px) in ``face``;
    None when fewer than two body rows fit."""
    table = _table_content(rng, face, width, max_height)
    if table is None:
        return None
    n_rows = len(table.labels)
    image, draw = new_tile(sum(table.widths) + 2, table.header_h + n_rows * table.row_h + 4)
    xs = np.concatenate([[1], 1 + np.cumsum(table.widths)])
    top = 2
    header_ink = _shade(rng, draw, table, xs, top) if style == "shaded" else INK
    _draw_cells(rng, image, draw, face, table, xs, top, header_ink, group_rule=style != "shaded")
    _draw_rules(rng, draw, face, style, table, xs, top)
    return make_block(image, [Region(Role.TABLE, rect=(0, 0, image.width, image.height))])


def _table_content(rng: np.random.Generator, face: Face, width: float, max_height: float) -> Optional[_Table]:
    """Sizes, labels and numeric columns of a table that fits ``width`` x ``max_height``; None when
    fewer than two body rows or no numeric column fit."""
    font, bold = face.font(), face.font("bold")
    pad = face.size * float(rng.uniform(0.4, 0.9))
    row_h = face.size * float(rng.uniform(1.35, 1.9))
    label_width = width * float(rng.uniform(0.25, 0.45))
    kinds = [int(k) for k in rng.integers(text.NUMBER_KINDS, size=int(rng.integers(1, 4)))]  # cycled over columns
    n_rows = int(min(30, 3 + rng.gamma(2.0, 4.0)))
    header_h = row_h * (2 if rng.random() < 0.2 else 1)
    n_rows = min(n_rows, int((max_height - header_h) / row_h) - 1)
    if n_rows < 2:
        return None

    labels = [_fits(font, text.heading(rng, 1, 5), label_width - 2 * pad) for _ in range(n_rows)]
    indents = [face.size if (k and rng.random() < 0.25) else 0 for k in range(n_rows)]
    columns: List[List[str]] = []
    widths = [max(text_length(font, s) + i for s, i in zip(labels, indents)) + 2 * pad]
    room = width - 2  # the tile has a 1 px border for the outer rules
    while True:
        kind = kinds[len(columns) % len(kinds)] if rng.random() < 0.8 else int(rng.integers(text.NUMBER_KINDS))
        cells = [text.table_number(rng, kind) for _ in range(n_rows)]
        header = (
            " ".join(text.content_words(rng, int(rng.integers(1, 3)))).capitalize()
            if rng.random() < 0.7
            else str(int(rng.integers(1995, 2024)))
        )
        col_w = max(max(text_length(font, c) for c in cells), text_length(bold, header)) + 2 * pad
        if sum(widths) + col_w > room or len(columns) >= 9:
            break
        columns.append([header] + cells)
        widths.append(col_w)
    if not columns:
        return None
    if rng.random() < 0.5:  # stretch to the full width
        widths = [w + (room - sum(widths)) / len(widths) for w in widths]
    return _Table(pad, row_h, header_h, labels, indents, columns, widths)


def _shade(rng: np.random.Generator, draw, table: _Table, xs: np.ndarray, top: float):
    """The ``shaded`` style's filled header band and maybe zebra stripes; returns the header's ink
    (white on a dark band)."""
    header_fill = _HEADER_FILLS[int(rng.integers(len(_HEADER_FILLS)))]
    draw.rectangle([xs[0], top, xs[-1], top + table.header_h], fill=header_fill)
    if rng.random() < 0.6:
        stripe = tuple(int(v) for v in rng.integers(228, 246, size=3))
        for k in range(1, len(table.labels), 2):
            y = top + table.header_h + k * table.row_h
            draw.rectangle([xs[0], y, xs[-1], y + table.row_h], fill=stripe)
    return (255, 255, 255) if sum(header_fill) < 400 else INK


def _draw_cells(rng: np.random.Generator, image, draw, face: Face, table: _Table, xs: np.ndarray, top: float,
                header_ink, group_rule: bool) -> None:
    """Headers, numbers (right-aligned or centred), a spanning group header when the header is two
    rows high (ruled below unless ``group_rule`` is False) and the row labels."""
    pad, row_h, header_h = table.pad, table.row_h, table.header_h

    def baseline(y_top: float, h: float) -> float:
        return y_top + h / 2 + 0.35 * face.size

    header_weight = "bold" if rng.random() < 0.7 else "regular"
    right_align = rng.random() < 0.7
    for c, column in enumerate(table.columns, start=1):
        cells_top = top + header_h
        header_font = font_for(face, header_weight, column[0])
        header_w = text_length(header_font, column[0])
        hx = xs[c + 1] - pad - header_w if right_align else (xs[c] + xs[c + 1] - header_w) / 2
        draw_text(
            image,
            (hx, baseline(top, header_h) + (row_h / 2 if header_h > row_h else 0)),
            column[0],
            header_font,
            header_ink,
        )
        for r, cell in enumerate(column[1:]):
            cell_font = font_for(face, "regular", cell)
            cell_w = text_length(cell_font, cell)
            cx = xs[c + 1] - pad - cell_w if right_align else (xs[c] + xs[c + 1] - cell_w) / 2
            draw_text(image, (cx, baseline(cells_top + r * row_h, row_h)), cell, cell_font, INK)
    if header_h > row_h:  # a spanning group header over the numeric columns
        group = text.heading(rng, 1, 3)
        gfont = font_for(face, header_weight, group)
        draw_text(
            image, ((xs[1] + xs[-1] - text_length(gfont, group)) / 2, baseline(top, row_h)), group, gfont, header_ink
        )
        if group_rule:
            draw.line([(xs[1] + pad, top + row_h), (xs[-1] - pad, top + row_h)], fill=INK, width=1)
    for r, (label, indent) in enumerate(zip(table.labels, table.indents)):
        weight = "bold" if (indent == 0 and rng.random() < 0.1) else "regular"
        draw_text(
            image,
            (xs[0] + pad + indent, baseline(top + header_h + r * row_h, row_h)),
            label,
            font_for(face, weight, label),
            INK,
        )


def _draw_rules(rng: np.random.Generator, draw, face: Face, style: str, table: _Table, xs: np.ndarray,
                top: float) -> None:
    """The rules of ``style``: a full grid, booktabs' three horizontal rules, or for ``unruled``
    sometimes one rule under the header."""
    header_h, row_h, n_rows = table.header_h, table.row_h, len(table.labels)
    bottom = top + header_h + n_rows * row_h
    rule = (60, 60, 60) if rng.random() < 0.3 else INK
    if style == "grid":
        for k in range(n_rows + 1):
            y = top + header_h + k * row_h
            draw.line([(xs[0], y), (xs[-1], y)], fill=rule, width=1)
        draw.line([(xs[0], top), (xs[-1], top)], fill=rule, width=1)
        for x in xs:
            draw.line([(x, top), (x, bottom)], fill=rule, width=1)
    elif style == "booktabs":
        thick = max(1, round(face.size / 8))
        draw.line([(xs[0], top), (xs[-1], top)], fill=INK, width=thick)
        draw.line([(xs[0], top + header_h), (xs[-1], top + header_h)], fill=INK, width=1)
        draw.line([(xs[0], bottom), (xs[-1], bottom)], fill=INK, width=thick)
    elif style == "unruled" and rng.random() < 0.5:
        draw.line([(xs[0], top + header_h), (xs[-1], top + header_h)], fill=rule, width=1)
