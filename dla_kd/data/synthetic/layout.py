"""Page composition: margins, page header/footer, front matter, column bands and the flow of body
elements (paragraphs, section headers, lists, figures, tables, formulas, wrapped cut-outs,
footnotes) through the columns.

Coordinates are pixels relative to the document page's top-left corner. Paragraphs that do not
fit a column continue at the top of the next one; figures/tables that do not fit are deferred to
the next column and the rest of the column is filled with text.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import text
from .block import Block, Role, new_tile, stack_blocks
from .fonts import SANS_FAMILIES, SERIF_FAMILIES, Face
from .formula import formula_block
from .pictures import picture_block
from .styles import Genre
from .table import table_block
from .text_blocks import (
    Typography,
    caption_block,
    footnote_block,
    heading_block,
    lines_block,
    list_block,
    margin_block,
    paragraph_lines,
    paragraph_runs,
    plain_text_block,
    title_block,
)
from .typeset import INK, Line, set_lines

# A body element as blocks with offsets (dx, dy) from its top-left corner, and its height.
Piece = Tuple[List[Tuple[Block, float, float]], float]
_HEADING_COLORS = ((0, 51, 102), (0, 84, 147), (153, 0, 0), (0, 102, 51), (70, 70, 140), (200, 80, 0))
_FLOATS = ("figure", "table")
LETTER_PT = (612, 792)


@dataclass
class Placement:
    """``block`` with its top-left corner at (x, y) on the page."""

    block: Block
    x: int
    y: int


def sample_typography(rng: np.random.Generator, genre: Genre, scale: float) -> Typography:
    """Fonts, sizes and spacing of one document; ``scale`` is pixels per point."""
    body = Face(str(rng.choice(genre.body_families)), max(7, round(rng.uniform(*genre.body_pt) * scale)))
    leading = float(rng.uniform(1.12, 1.35))
    indented = rng.random() < 0.5
    heading_family = body.family if rng.random() < 0.6 else str(rng.choice(SANS_FAMILIES + SERIF_FAMILIES))
    heading_weight = str(rng.choice(["bold", "bold", "bold", "bold_italic", "regular"]))
    colored = rng.random() < genre.colored_headings
    return Typography(
        body=body,
        leading=leading,
        align="justify" if rng.random() < genre.justify_prob else "left",
        indent=body.size * float(rng.uniform(1.0, 2.5)) if indented else 0.0,
        paragraph_gap=body.size * leading * (float(rng.uniform(0, 0.3)) if indented else float(rng.uniform(0.4, 1.0))),
        heading=Face(heading_family, round(body.size * rng.uniform(1.0, 1.4))),
        heading_weight=heading_weight,
        heading_color=_HEADING_COLORS[int(rng.integers(len(_HEADING_COLORS)))] if colored else INK,
        heading_numbered=rng.random() < 0.6,
        heading_caps=heading_weight == "regular" or rng.random() < 0.15,
        caption=body.scaled(float(rng.uniform(0.85, 1.0))),
        caption_weight="italic" if rng.random() < 0.25 else "regular",
        caption_label_weight="bold" if rng.random() < 0.7 else "regular",
        caption_label_prob=float(rng.uniform(0.5, 0.95)),
        small=body.scaled(float(rng.uniform(0.72, 0.85))),
    )


def rule_block(width: float, thickness: int = 1) -> Block:
    """A horizontal rule (drawn, not annotated)."""
    image, draw = new_tile(width, thickness)
    draw.rectangle([0, 0, width, thickness], fill=INK)
    return Block(image, [])


class PageComposer:
    """Composes one document page of ``genre`` at ``width`` x ``height`` px."""

    def __init__(self, rng: np.random.Generator, genre: Genre, width: int, height: int):
        self.rng, self.genre, self.width, self.height = rng, genre, width, height
        self.scale = float(np.sqrt(width * height / (LETTER_PT[0] * LETTER_PT[1])))
        self.typo = sample_typography(rng, genre, self.scale)
        pitch = self.typo.pitch
        self.space_before: Dict[str, float] = {
            "paragraph": self.typo.paragraph_gap,
            "heading": pitch * float(rng.uniform(0.7, 1.6)),
            "list": max(self.typo.paragraph_gap, pitch * 0.3),
            "figure": pitch * float(rng.uniform(0.7, 1.5)),
            "formula": pitch * float(rng.uniform(0.3, 0.8)),
        }
        self.space_before["table"] = self.space_before["wrapped_cutout"] = self.space_before["figure"]
        self.space_after_heading = pitch * float(rng.uniform(0.2, 0.7))
        self.numbering = str(rng.choice(genre.heading_numbering))
        self.section = [int(rng.integers(1, 8)), 0]
        self.counters = {
            name: int(rng.integers(1, 12)) for name in ("figure", "table", "equation", "footnote", "paragraph")
        }
        self.page_number = int(rng.integers(1, 400))
        self.placements: List[Placement] = []
        self.list_groups = 0
        self.pending: Optional[Tuple[List[Line], float]] = None  # continued paragraph: lines, width
        self.deferred: Optional[str] = None
        self.last_kind = "paragraph"

    # ---- page frame -----------------------------------------------------------------------
    def compose(self) -> List[Placement]:
        """Place all blocks of the page; return them in drawing order."""
        rng, W, H = self.rng, self.width, self.height
        left, right = W * float(rng.uniform(0.06, 0.13)), W * float(rng.uniform(0.06, 0.13))
        top, bottom = H * float(rng.uniform(0.06, 0.11)), H * float(rng.uniform(0.06, 0.11))
        body_w = W - left - right
        self._page_margins(left, body_w, top, H - bottom)
        body_top, body_bottom = top, H - bottom
        if rng.random() < self.genre.first_page_prob:
            body_top = self._front_matter(left, body_top, body_w)
        columns = list(self.genre.columns)
        n_cols = int(rng.choice(columns, p=np.array([self.genre.columns[c] for c in columns])))
        if n_cols > 1 and rng.random() < 0.25:
            body_top, body_bottom = self._spanning_float(left, body_top, body_w, body_bottom)
        self._column_band(left, body_top, body_w, body_bottom, n_cols)
        return self.placements

    def _place(self, block: Block, x: float, y: float) -> None:
        self.placements.append(Placement(block, int(round(x)), int(round(y))))

    def _page_margins(self, left: float, width: float, body_top: float, body_bottom: float) -> None:
        """Page header in the top margin and page footer in the bottom margin (each optional)."""
        rng, typo = self.rng, self.typo
        face = typo.body if rng.random() < 0.25 else typo.small
        running = text.heading(rng, 2, 8)
        number = str(self.page_number)
        if rng.random() < 0.75:
            weight = "italic" if rng.random() < 0.4 else "regular"
            layouts = (
                [(running, weight, "left"), (number, "regular", "right")],
                [(number, "regular", "left"), (running, weight, "right")],
                [(running, weight, "center")],
                [(running, weight, "left"), (text.heading(rng, 1, 3), weight, "right")],
                [(text.heading(rng, 1, 3), weight, "left"), (running, weight, "center"), (number, "regular", "right")],
            )
            items = layouts[int(rng.integers(len(layouts)))]
            block = margin_block(items, face, width, Role.PAGE_HEADER, "below" if rng.random() < 0.35 else None)
            y = body_top * float(rng.uniform(0.3, 0.55)) - block.height / 2
            self._place(block, left, min(y, body_top - block.height - 2))
        if rng.random() < 0.7:
            layouts = (
                [(number, "regular", "center")],
                [(f"Page {number} of {self.page_number + int(rng.integers(0, 40))}", "regular", "right")],
                [(text.heading(rng, 2, 6), "regular", "left"), (number, "regular", "right")],
                [(f"© {int(rng.integers(1995, 2024))} {text.heading(rng, 1, 3)}", "regular", "left")],
                [(number, "bold", "right")],
            )
            items = layouts[int(rng.integers(len(layouts)))]
            block = margin_block(items, face, width, Role.PAGE_FOOTER, "above" if rng.random() < 0.25 else None)
            y = self.height - (self.height - body_bottom) * float(rng.uniform(0.35, 0.6)) - block.height / 2
            self._place(block, left, max(y, body_bottom + 2))

    def _front_matter(self, left: float, top: float, width: float) -> float:
        """Title, then authors/affiliations/abstract (articles) or a subtitle; return the new top."""
        rng, typo = self.rng, self.typo
        align = "center" if rng.random() < 0.6 else "left"
        family = typo.body.family if rng.random() < 0.6 else str(rng.choice(SERIF_FAMILIES + SANS_FAMILIES))
        title_face = Face(family, round(typo.body.size * rng.uniform(1.5, 2.6)))
        blocks = [title_block(rng, title_face, "bold" if rng.random() < 0.7 else "regular", width, align)]
        if self.genre.abstract:
            names = ", ".join(text.person_name(rng) for _ in range(int(rng.integers(1, 7))))
            blocks.append(plain_text_block(names, typo.body.scaled(1.1), "regular", width, align))
            affiliations = "; ".join(text.heading(rng, 3, 8) for _ in range(int(rng.integers(1, 4))))
            blocks.append(plain_text_block(affiliations, typo.small, "italic", width, align))
            inset = width * float(rng.choice([0.0, 0.0, 0.06, 0.1]))
            if rng.random() < 0.5:
                blocks.append(heading_block(rng, typo, width - 2 * inset, ""))
                lead_in = ""
            else:
                lead_in = str(rng.choice(["Abstract", "Abstract.", "ABSTRACT", "Summary:"]))
            runs = paragraph_runs(rng, typo, (4, 9), lead_in)
            blocks.append(
                lines_block(
                    paragraph_lines(runs, typo, width - 2 * inset, 0.0),
                    typo.body,
                    typo.pitch,
                    width - 2 * inset,
                    Role.TEXT,
                )
            )
            if rng.random() < 0.5:
                keywords = "Keywords: " + ", ".join(text.content_words(rng, int(rng.integers(3, 7))))
                blocks.append(plain_text_block(keywords, typo.body, "regular", width - 2 * inset, "left"))
        elif rng.random() < 0.6:
            blocks.append(plain_text_block(text.heading(rng, 3, 10), typo.body.scaled(1.2), "regular", width, align))
        gap = typo.pitch * float(rng.uniform(0.6, 1.6))
        for block in blocks:
            x = left + (width - block.width) / 2
            self._place(block, x, top)
            top += block.height + gap
        return top + gap * 0.5

    def _spanning_float(self, left: float, top: float, width: float, bottom: float) -> Tuple[float, float]:
        """A figure or table across all columns at the top or bottom of the body; returns the
        remaining (top, bottom)."""
        kind = str(self.rng.choice(["figure", "table"]))
        piece = self._build(kind, width, (bottom - top) * 0.45)
        if piece is None:
            return top, bottom
        gap = self.space_before["figure"]
        at_top = self.rng.random() < 0.6
        y = top if at_top else bottom - piece[1]
        self._place_piece(piece, left, y)
        return (top + piece[1] + gap, bottom) if at_top else (top, bottom - piece[1] - gap)

    # ---- columns -------------------------------------------------------------------------
    def _column_band(self, left: float, top: float, width: float, bottom: float, n_cols: int) -> None:
        rng = self.rng
        gutter = self.width * float(rng.uniform(0.025, 0.05))
        col_w = (width - gutter * (n_cols - 1)) / n_cols
        for c in range(n_cols):
            x = left + c * (col_w + gutter)
            col_bottom = bottom
            if c == n_cols - 1 and rng.random() < 0.1:  # end of a chapter/article
                col_bottom = top + (bottom - top) * float(rng.uniform(0.2, 0.9))
            elif rng.random() < self.genre.footnote_prob / n_cols:
                col_bottom = self._footnotes(x, col_w, col_bottom)
            self._fill_column(x, top, col_w, col_bottom)

    def _footnotes(self, x: float, width: float, bottom: float) -> float:
        """1-3 footnotes (maybe under a short rule) at the column bottom; returns the new bottom."""
        rng = self.rng
        symbols = rng.random() < 0.2
        blocks = []
        for _ in range(int(rng.integers(1, 4))):
            marker = str(rng.choice(["*", "†", "‡", "§"])) if symbols else str(self.counters["footnote"])
            self.counters["footnote"] += 1
            blocks.append(footnote_block(rng, self.typo, width, marker))
        if rng.random() < 0.6:
            blocks.insert(0, rule_block(width * float(rng.uniform(0.2, 0.4))))
        stacked = stack_blocks(blocks, self.typo.small.size * 0.3, align="left")
        if bottom - stacked.height < self.height * 0.3:  # would take most of the column
            return bottom
        self._place(stacked, x, bottom - stacked.height)
        return bottom - stacked.height - self.typo.pitch

    def _fill_column(self, x: float, top: float, width: float, bottom: float) -> None:
        """Flow body elements into the column of ``width`` px at ``x`` from ``top`` to ``bottom``."""
        y = top
        while bottom - y >= self.typo.pitch:
            kind = self._choose_element(width, at_top=y == top)
            gap = 0.0 if (y == top or self.pending is not None) else self._gap(kind)
            piece = self._build(kind, width, bottom - y - gap)
            if piece is None:
                if kind in _FLOATS:
                    self.deferred = kind
                kind = "paragraph"
                gap = 0.0 if (y == top or self.pending is not None) else self._gap(kind)
                piece = self._build(kind, width, bottom - y - gap)
                if piece is None:
                    break
            elif kind == self.deferred:
                self.deferred = None
            self._place_piece(piece, x, y + gap)
            y += gap + piece[1]
            self.last_kind = kind

    def _place_piece(self, piece: Piece, x: float, y: float) -> None:
        for block, dx, dy in piece[0]:
            self._place(block, x + dx, y + dy)

    def _gap(self, kind: str) -> float:
        if self.last_kind == "heading":
            return self.space_after_heading
        return max(self.space_before[self.last_kind], self.space_before[kind])

    def _choose_element(self, width: float, at_top: bool) -> str:
        """Kind of the next element: a continued paragraph first, text after a heading, a
        deferred float at the top of a column, else a draw from the genre's weights."""
        if self.pending is not None:
            return "paragraph"
        if self.last_kind == "heading":
            return "list" if self.rng.random() < 0.15 and "list" in self.genre.elements else "paragraph"
        if self.deferred is not None and at_top:
            return self.deferred
        weights = dict(self.genre.elements)
        if width < self.width * 0.55:
            weights.pop("wrapped_cutout", None)
        kinds = list(weights)
        p = np.array([weights[k] for k in kinds])
        return kinds[int(self.rng.choice(len(kinds), p=p / p.sum()))]

    def _build(self, kind: str, width: float, room: float) -> Optional[Piece]:
        """The element ``kind`` at ``width`` within ``room`` px of height, or None if it cannot fit."""
        if room <= 0:
            return None
        return getattr(self, f"_{kind}")(width, room)

    # ---- body elements --------------------------------------------------------------------
    def _lead_in(self) -> str:
        if self.genre.lead_in == "patent":
            self.counters["paragraph"] += 1
            return f"[{self.counters['paragraph']:04d}]"
        if self.genre.lead_in == "runin" and self.rng.random() < 0.06:
            return text.heading(self.rng, 1, 4) + "."
        return ""

    def _paragraph(self, width: float, room: float) -> Optional[Piece]:
        typo = self.typo
        if self.pending is not None and self.pending[1] == width:
            lines = self.pending[0]
        else:
            runs = paragraph_runs(self.rng, typo, self.genre.paragraph_sentences, self._lead_in())
            lines = paragraph_lines(runs, typo, width)
        fitting = int(room // typo.pitch)
        if fitting <= 0:
            self.pending = None
            return None
        self.pending = (lines[fitting:], width) if len(lines) > fitting else None
        block = lines_block(lines[:fitting], typo.body, typo.pitch, width, Role.TEXT)
        return [(block, 0, 0)], block.height

    def _section_number(self) -> str:
        if self.rng.random() < 0.6 or self.section[1] == 0 and self.rng.random() < 0.5:
            self.section = [self.section[0] + 1, 0]
        else:
            self.section[1] += 1
        major, minor = self.section
        if self.numbering == "decimal":
            return f"{major}.{minor}" if minor else f"{major}."
        if self.numbering == "roman":
            return ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII")[major % 12] + "."
        if self.numbering == "section":
            return f"§ {major * 3 + minor}"
        if self.numbering == "article":
            return f"Article {major * 3 + minor}"
        return ""

    def _heading(self, width: float, room: float) -> Optional[Piece]:
        block = heading_block(self.rng, self.typo, width, self._section_number())
        if block.height + self.space_after_heading + 2 * self.typo.pitch > room:
            return None
        return [(block, 0, 0)], block.height

    def _list(self, width: float, room: float) -> Optional[Piece]:
        self.list_groups += 1
        n_items = int(self.rng.integers(*self.genre.list_items))
        block = list_block(self.rng, self.typo, width, room, self.list_groups, n_items)
        return None if block is None else ([(block, 0, 0)], block.height)

    def _formula(self, width: float, room: float) -> Optional[Piece]:
        self.counters["equation"] += 1
        size = self.typo.body.size * float(self.rng.uniform(1.0, 1.2))
        block = formula_block(self.rng, size, width, self.counters["equation"], self.rng.random() < 0.7)
        return None if block.height > room else ([(block, 0, 0)], block.height)

    def _captioned(self, content: Block, caption: Optional[Block], above: bool, width: float) -> Piece:
        gap = self.typo.pitch * float(self.rng.uniform(0.3, 0.9))
        parts = [content] if caption is None else ([caption, content] if above else [content, caption])
        block = stack_blocks(parts, gap)
        return [(block, (width - block.width) / 2, 0)], block.height

    def _figure(self, width: float, room: float) -> Optional[Piece]:
        rng, typo = self.rng, self.typo
        kind = str(rng.choice(self.genre.picture_kinds))
        narrow = kind in ("photo", "cutout", "pie")
        fig_w = width * float(rng.uniform(0.4, 0.9) if narrow else rng.uniform(0.6, 1.0))
        fig_h = fig_w * float(rng.uniform(0.6, 1.0) if kind == "cutout" else rng.uniform(0.45, 0.8))
        fig_h = min(fig_h, self.height * float(rng.uniform(0.2, 0.45)))
        self.counters["figure"] += 1
        caption = None
        if rng.random() < 0.85:
            caption_w = width if rng.random() < 0.6 else max(fig_w, width * 0.6)
            caption = caption_block(rng, typo, caption_w, False, self.counters["figure"])
        fig_h = min(fig_h, room - (caption.height + typo.pitch if caption else 0))
        if fig_h < 40 * self.scale:
            return None
        picture = picture_block(rng, kind, fig_w, fig_h, typo.small)
        if caption is not None and width > self.width * 0.55 and fig_w < width * 0.65 and rng.random() < 0.3:
            return self._side_caption(picture, width)
        return self._captioned(picture, caption, rng.random() < 0.15, width)

    def _side_caption(self, picture: Block, width: float) -> Piece:
        """Picture with its caption set beside it (top-aligned)."""
        gap = self.typo.body.size * 1.5
        caption = caption_block(self.rng, self.typo, width - picture.width - gap, False, self.counters["figure"])
        if caption.height > picture.height:
            return self._captioned(picture, None, False, width)
        return [(picture, 0, 0), (caption, picture.width + gap, 0)], float(picture.height)

    def _table(self, width: float, room: float) -> Optional[Piece]:
        rng, typo = self.rng, self.typo
        self.counters["table"] += 1
        caption = caption_block(rng, typo, width, True, self.counters["table"]) if rng.random() < 0.9 else None
        note = None
        if rng.random() < 0.3:
            note_text = str(rng.choice(["Note:", "Source:", "*"])) + " " + text.sentence(rng)
            note = plain_text_block(note_text, typo.small, "regular", width, "left", Role.FOOTNOTE)
        reserved = sum(b.height + typo.pitch for b in (caption, note) if b is not None)
        face = typo.body.scaled(float(rng.uniform(0.8, 1.0)))
        table = table_block(rng, face, width, room - reserved, str(rng.choice(self.genre.table_styles)))
        if table is None:
            return None
        if note is not None:
            table = stack_blocks([table, note], typo.small.size * 0.4, align="left")
        return self._captioned(table, caption, rng.random() < 0.75, width)

    def _wrapped_cutout(self, width: float, room: float) -> Optional[Piece]:
        """A shaped photo at one side of the column with a paragraph set beside it; the
        paragraph continues at full width below the photo."""
        rng, typo = self.rng, self.typo
        pic_w = width * float(rng.uniform(0.28, 0.45))
        pic_h = min(pic_w * float(rng.uniform(0.75, 1.1)), room)
        n_side = int(np.ceil(pic_h / typo.pitch))
        if pic_h < 40 * self.scale or n_side * typo.pitch > room:
            return None
        picture = picture_block(rng, "cutout", pic_w, pic_h, typo.small)
        gap = typo.body.size * float(rng.uniform(1.0, 2.0))
        runs = paragraph_runs(rng, typo, (n_side // 2 + 3, n_side // 2 + 6), self._lead_in())
        side_lines = paragraph_lines(runs, typo, width - pic_w - gap)
        rest = [run for line in side_lines[n_side:] for run in line.runs]
        side = lines_block(side_lines[:n_side], typo.body, typo.pitch, width - pic_w - gap, Role.TEXT)
        if rest:
            self.pending = (set_lines(rest, width, typo.body, typo.align), width)
        on_left = rng.random() < 0.5
        pic_x, text_x = (0, pic_w + gap) if on_left else (width - pic_w, 0)
        return [(picture, pic_x, 0), (side, text_x, 0)], float(max(picture.height, side.height))
