"""Builders of text-like blocks: paragraphs, titles, section headers, lists, captions, footnotes,
page headers/footers. Sizes are pixels; every builder takes the page RNG and the document's
:class:`Typography` and returns a :class:`~.block.Block` whose regions carry the block's role.

Paragraphs are set in two steps (:func:`paragraph_lines` then :func:`lines_block`) so the page
composer can split them across columns.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import text
from .block import Block, Region, Role, make_block, new_tile
from .fonts import Face, draw_text, font_for, text_length
from .typeset import INK, Color, Line, Run, draw_lines, runs_from_text, set_lines

REAL_HEADINGS = ("Introduction", "Methods", "Results", "Discussion", "Conclusions", "Background", "Abstract", "Summary")
_CAPTION_LABELS = ("Figure {n}:", "Figure {n}.", "Fig. {n}.", "FIGURE {n}", "Fig. {n}", "Exhibit {n}:")
_TABLE_LABELS = ("Table {n}:", "Table {n}.", "TABLE {n}", "Table {n}")
# list_marker kinds, repeated for weight
_LIST_KINDS = ("•", "•", "–", "number", "number", "paren-number", "letter", "roman", "none") + text.BULLETS


@dataclass
class Typography:
    """Text styling of one document (sizes in px)."""

    body: Face
    leading: float  # line pitch / font size
    align: str  # "justify" or "left"
    indent: float  # first-line indent of paragraphs
    paragraph_gap: float  # vertical space between paragraphs
    heading: Face
    heading_weight: str
    heading_color: Color
    heading_numbered: bool
    heading_caps: bool
    caption: Face
    caption_weight: str
    caption_label_weight: str
    caption_label_prob: float  # probability that a caption starts with "Figure n:"
    small: Face  # footnotes, page headers/footers, table notes

    @property
    def pitch(self) -> float:
        return self.body.size * self.leading


def first_baseline(face: Face, pitch: float) -> float:
    """Distance from the top of a text block to its first baseline (px)."""
    return (pitch - face.size) / 2 + 0.8 * face.size


def lines_block(lines: Sequence[Line], face: Face, pitch: float, width: float, role: Role) -> Block:
    """A block of already set ``lines`` with one region of ``role``."""
    height = len(lines) * pitch
    image, _ = new_tile(width, height)
    draw_lines(image, lines, 0, first_baseline(face, pitch), pitch)
    return make_block(image, [Region(role, rect=(0, 0, image.width, image.height))])


def _superscript(face: Face, marker: str) -> Run:
    small = face.scaled(0.65)
    return Run(marker, font_for(small, "regular", marker), rise=round(face.size * 0.38), space_before=False)


def paragraph_runs(
    rng: np.random.Generator, typo: Typography, n_sentences: Tuple[int, int], lead_in: str = ""
) -> List[Run]:
    """Runs of a pseudo-text paragraph of ``n_sentences`` (min, max) sentences: ``lead_in`` set bold
    in front (run-in heading), about 1% of the words in italics and sometimes a footnote marker."""
    words = text.paragraph(rng, *n_sentences).split()
    italic = rng.random(len(words)) < 0.01
    runs = runs_from_text(lead_in, typo.body, "bold") + [
        Run(word, font_for(typo.body, "italic" if slanted else "regular", word)) for word, slanted in zip(words, italic)
    ]
    if rng.random() < 0.1 and len(runs) > 4:
        runs.insert(int(rng.integers(2, len(runs))), _superscript(typo.body, str(int(rng.integers(1, 9)))))
    return runs


def paragraph_lines(runs: Sequence[Run], typo: Typography, width: float, indent: Optional[float] = None) -> List[Line]:
    """Set paragraph ``runs`` at ``width`` with the document's alignment and first-line indent."""
    return set_lines(runs, width, typo.body, typo.align, typo.indent if indent is None else indent)


def heading_block(rng: np.random.Generator, typo: Typography, width: float, number: str) -> Block:
    """A section header: optional number, bold/caps text, one or two lines."""
    words = str(rng.choice(REAL_HEADINGS)) if rng.random() < 0.15 else text.heading(rng, 1, 7)
    if typo.heading_caps:
        words = words.upper()
    label = f"{number} {words}" if (typo.heading_numbered and number) else words
    runs = runs_from_text(label, typo.heading, typo.heading_weight, typo.heading_color)
    pitch = typo.heading.size * 1.2
    lines = set_lines(runs, width, typo.heading, "left")
    return lines_block(lines, typo.heading, pitch, width, Role.SECTION_HEADER)


def title_block(rng: np.random.Generator, face: Face, weight: str, width: float, align: str) -> Block:
    """A document title (large face, 1-3 lines)."""
    runs = runs_from_text(text.title(rng), face, weight)
    lines = set_lines(runs, width * float(rng.uniform(0.75, 1.0)), face, align)
    if align == "center":
        shift = (width - max(line.right for line in lines)) / 2
        lines = [Line(line.runs, [x + shift for x in line.xs]) for line in lines]
    return lines_block(lines, face, face.size * 1.2, width, Role.TITLE)


def plain_text_block(content: str, face: Face, weight: str, width: float, align: str, role: Role = Role.TEXT) -> Block:
    """``content`` set at ``width`` in one face (author lists, affiliations, notes)."""
    runs = runs_from_text(content, face, weight)
    return lines_block(set_lines(runs, width, face, align), face, face.size * 1.25, width, role)


def list_marker(kind: str, k: int) -> str:
    """Marker of the ``k``-th (0-based) item of a list whose ``kind`` is a bullet character,
    "number", "paren-number", "letter", "roman" or "none"."""
    if kind == "number":
        return f"{k + 1}."
    if kind == "paren-number":
        return f"({k + 1})"
    if kind == "letter":
        return f"({'abcdefghijklmnopqrstuvwxyz'[k % 26]})"
    if kind == "roman":
        return ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii")[k % 12] + "."
    if kind == "none":
        return ""
    return kind


def list_block(
    rng: np.random.Generator, typo: Typography, width: float, max_height: float, group: int, n_items: int
) -> Optional[Block]:
    """Up to ``n_items`` list items (as many as fit in ``max_height``) with a hanging indent; each
    item is a LIST_ITEM region of ``group``. None when not even one item fits."""
    kind = str(rng.choice(_LIST_KINDS))
    left = float(rng.uniform(0, 2.5)) * typo.body.size
    markers = [list_marker(kind, k) for k in range(n_items)]
    marker_font = font_for(typo.body, "regular", "".join(markers))
    hang = max([text_length(marker_font, m) for m in markers] + [0]) + typo.body.size * (0.5 if kind != "none" else 1.5)
    gap = typo.pitch * float(rng.choice([0.0, 0.0, 0.3, 0.6]))
    max_sentences = int(rng.choice([1, 1, 2, 3]))
    items: List[Tuple[str, List[Line]]] = []
    height = 0.0
    for marker in markers:
        runs = runs_from_text(text.paragraph(rng, 1, max_sentences), typo.body)
        lines = set_lines(runs, width - left, typo.body, typo.align, hang, hang)
        needed = len(lines) * typo.pitch + (gap if items else 0.0)
        if height + needed > max_height:
            break
        items.append((marker, lines))
        height += needed
    if not items:
        return None
    image, _ = new_tile(width, height)
    regions, top = [], 0.0
    baseline = first_baseline(typo.body, typo.pitch)
    for marker, lines in items:
        if marker:
            draw_text(image, (left, top + baseline), marker, marker_font, INK)
        draw_lines(image, lines, left, top + baseline, typo.pitch)
        bottom = top + len(lines) * typo.pitch
        regions.append(Region(Role.LIST_ITEM, rect=(0, int(top), image.width, int(np.ceil(bottom))), group=group))
        top = bottom + gap
    return make_block(image, regions)


def caption_block(rng: np.random.Generator, typo: Typography, width: float, is_table: bool, number: int) -> Block:
    """A figure/table caption, with a bold "Figure n:" label with probability
    ``typo.caption_label_prob``; short captions are centred."""
    labels = _TABLE_LABELS if is_table else _CAPTION_LABELS
    label = str(rng.choice(labels)).format(n=number) if rng.random() < typo.caption_label_prob else ""
    runs = runs_from_text(label, typo.caption, typo.caption_label_weight) + runs_from_text(
        text.paragraph(rng, 1, int(rng.choice([1, 1, 2, 4]))), typo.caption, typo.caption_weight
    )
    lines = set_lines(runs, width, typo.caption, typo.align)
    if len(lines) == 1 and rng.random() < 0.6:
        lines = set_lines(runs, width, typo.caption, "center")
    return lines_block(lines, typo.caption, typo.caption.size * typo.leading, width, Role.CAPTION)


def footnote_block(rng: np.random.Generator, typo: Typography, width: float, marker: str) -> Block:
    """A footnote in the small face starting with a superscript ``marker``."""
    face = typo.small
    runs = [_superscript(face, marker)] + runs_from_text(text.paragraph(rng, 1, 2), face)
    runs[1].space_before = False
    lines = set_lines(runs, width, face, typo.align, face.size * 0.8 if rng.random() < 0.5 else 0)
    return lines_block(lines, face, face.size * 1.2, width, Role.FOOTNOTE)


def margin_block(
    items: Sequence[Tuple[str, str, str]], face: Face, width: float, role: Role, rule: Optional[str]
) -> Block:
    """One line of page-header/footer ``items`` ``(text, weight, position)`` with position
    "left", "center" or "right", each its own region; ``rule`` draws a line "above" or "below"
    the text (not annotated)."""
    pitch = face.size * 1.3
    height = pitch + face.size * 0.6
    text_top = face.size * 0.6 if rule == "above" else 0.0
    image, draw = new_tile(width, height)
    baseline = text_top + first_baseline(face, pitch)
    regions = []
    for content, weight, position in items:
        runs = runs_from_text(content, face, weight)
        line = set_lines(runs, width, face, position)[0]
        draw_lines(image, [line], 0, baseline, pitch)
        regions.append(
            Region(role, rect=(int(line.xs[0]) - 1, int(text_top), int(np.ceil(line.right)) + 1, int(text_top + pitch)))
        )
    if rule:
        y = 1 if rule == "above" else int(height) - 2
        draw.line([(0, y), (width, y)], fill=INK, width=1)
    return make_block(image, regions)
