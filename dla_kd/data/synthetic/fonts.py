"""Fonts for the synthetic pages: only the TrueType files bundled with matplotlib
(``matplotlib.get_data_path()/fonts/ttf``), so the rendered pixels do not depend on the system.

A :class:`Family` names the regular/bold/italic files of one typeface. The bundled Computer Modern
files have no text italic and few non-ASCII glyphs, so every text run goes through
:func:`font_for`, which falls back to STIX (serif) or DejaVu Sans for glyphs a file lacks.

Text is measured and drawn through :func:`text_length`, :func:`text_bbox` and :func:`draw_text`,
which work on the font at :data:`SUPERSAMPLING` times its size: at body sizes of 8-11 px FreeType's
hinting snaps glyph advances to whole pixels and makes letter spacing ragged; drawing 3x larger and
box-filtering down gives the even spacing and grey anti-aliasing of a PDF rendering.
"""

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import FrozenSet, Tuple, Union

import matplotlib
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont

FONT_DIR = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


@dataclass(frozen=True)
class Family:
    """Font files (names inside :data:`FONT_DIR`) of one typeface, one per weight ("regular",
    "bold", "italic", "bold_italic")."""

    regular: str
    bold: str
    italic: str
    bold_italic: str

    def file(self, weight: str) -> str:
        return getattr(self, weight)


FAMILIES = {
    "dejavu-serif": Family(
        "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf"
    ),
    "dejavu-sans": Family(
        "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf"
    ),
    "dejavu-mono": Family(
        "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf"
    ),
    "stix": Family("STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf"),
    "cm-roman": Family("cmr10.ttf", "cmb10.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf"),
    "cm-sans": Family("cmss10.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf"),
    "cm-mono": Family("cmtt10.ttf", "cmtt10.ttf", "cmtt10.ttf", "cmtt10.ttf"),
}
SERIF_FAMILIES = ("dejavu-serif", "stix", "cm-roman")
SANS_FAMILIES = ("dejavu-sans", "cm-sans")
MONO_FAMILIES = ("dejavu-mono", "cm-mono")

# Tried in order for glyphs missing from the requested file (same weight).
_FALLBACK_FAMILIES = (FAMILIES["stix"], FAMILIES["dejavu-sans"])


@lru_cache(maxsize=None)
def _covered_codepoints(file_name: str) -> FrozenSet[int]:
    """Unicode code points that ``file_name`` maps to a glyph."""
    with TTFont(os.path.join(FONT_DIR, file_name), lazy=True) as font:
        return frozenset(font.getBestCmap())


@lru_cache(maxsize=None)
def load_font(file_name: str, size_px: int) -> ImageFont.FreeTypeFont:
    """The bundled font ``file_name`` at ``size_px`` pixels per em."""
    return ImageFont.truetype(os.path.join(FONT_DIR, file_name), max(1, int(size_px)))


@dataclass(frozen=True)
class Face:
    """A family at a size (pixels per em); the unit in which text styles are chosen."""

    family: str
    size: int

    def scaled(self, factor: float) -> "Face":
        return Face(self.family, max(4, round(self.size * factor)))

    def font(self, weight: str = "regular") -> ImageFont.FreeTypeFont:
        return load_font(FAMILIES[self.family].file(weight), self.size)

    @property
    def space_width(self) -> float:
        """Width of an inter-word space (px)."""
        return text_length(self.font(), " ")


def font_for(face: Face, weight: str, text: str) -> ImageFont.FreeTypeFont:
    """The font of ``face``/``weight`` if it has glyphs for all of ``text``, else the first
    fallback family (same weight and size) that has them."""
    needed = {ord(c) for c in text if not c.isspace()}
    for family in (FAMILIES[face.family],) + _FALLBACK_FAMILIES:
        file_name = family.file(weight)
        if needed <= _covered_codepoints(file_name):
            return load_font(file_name, face.size)
    return load_font(_FALLBACK_FAMILIES[-1].file(weight), face.size)


SUPERSAMPLING = 3


def _hires(font: ImageFont.FreeTypeFont) -> ImageFont.FreeTypeFont:
    return load_font(os.path.basename(font.path), font.size * SUPERSAMPLING)


def text_length(font: ImageFont.FreeTypeFont, text: str) -> float:
    """Advance width of ``text`` in px (fractional, without hinting)."""
    return _hires(font).getlength(text) / SUPERSAMPLING


def text_bbox(font: ImageFont.FreeTypeFont, text: str, anchor: str = "ls") -> Tuple[float, float, float, float]:
    """Ink box (left, top, right, bottom) of ``text`` in px relative to its ``anchor`` point."""
    return tuple(v / SUPERSAMPLING for v in _hires(font).getbbox(text, anchor=anchor))


@lru_cache(maxsize=50000)
def _text_mask(
    file_name: str, size_px: int, text: str, anchor: str, phase_x: int, phase_y: int
) -> Tuple[int, int, Image.Image]:
    """Coverage mask of ``text`` whose anchor point lies ``phase_*`` (0..SUPERSAMPLING-1) hi-res
    pixels right of/below a pixel corner: (left, top, mask), the mask's top-left pixel relative to
    that corner. The mask is sized from the advance width plus one em on each side (no layout
    pass for an exact bounding box, which costs as much as drawing)."""
    hires, s = load_font(file_name, size_px * SUPERSAMPLING), SUPERSAMPLING
    em = hires.size
    length = hires.getlength(text)
    anchor_x = {"l": 0.0, "m": length / 2, "r": length}[anchor[0]]
    left, right = -math.ceil((anchor_x + em) / s), math.ceil((length - anchor_x + em) / s) + 1
    top, bottom = -math.ceil(1.6 * em / s), math.ceil(1.6 * em / s) + 1
    mask = Image.new("L", ((right - left) * s, (bottom - top) * s), 0)
    ImageDraw.Draw(mask).text((phase_x - left * s, phase_y - top * s), text, font=hires, fill=255, anchor=anchor)
    return left, top, mask.reduce(s)


def draw_text(
    image: Image.Image,
    xy: Tuple[float, float],
    text: str,
    font: ImageFont.FreeTypeFont,
    fill: Union[int, Tuple[int, ...]],
    anchor: str = "ls",
) -> None:
    """Draw ``text`` on ``image`` with its ``anchor`` point (PIL anchor codes) at ``xy`` (to
    1/SUPERSAMPLING px), rasterised supersampled and box-filtered (masks are cached)."""
    x, y = round(xy[0] * SUPERSAMPLING), round(xy[1] * SUPERSAMPLING)
    base_x, phase_x = divmod(x, SUPERSAMPLING)
    base_y, phase_y = divmod(y, SUPERSAMPLING)
    left, top, mask = _text_mask(os.path.basename(font.path), font.size, text, anchor, phase_x, phase_y)
    left, top = base_x + left, base_y + top
    image.paste(fill, (left, top, left + mask.width, top + mask.height), mask)
