"""Display formulas: a tiny box-model typesetter (glyphs, rows, fractions, scripts, radicals,
big operators, delimiters) fed by a random expression generator, drawn with STIX glyphs.

A :class:`MathBox` has a width, an ascent (above the baseline) and a descent (below), all in px,
and draws itself given the x of its left edge and the y of its baseline.
"""

from dataclasses import dataclass
from typing import Callable, List, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .block import Block, Region, Role, make_block, new_tile
from .fonts import draw_text, load_font, text_bbox, text_length
from .text import GREEK
from .typeset import INK

_ITALIC, _UPRIGHT = "STIXGeneralItalic.ttf", "STIXGeneral.ttf"
_LATIN = "abcdefghknpqrstuvwxyzABCDEFGHKLMNPRSTUVWXYZ"
_OPERATORS = ("+", "−", "+", "−", "·", "×", "±")
_RELATIONS = ("=", "=", "=", "≤", "≥", "≈", "∝", "≡")
_FUNCTIONS = ("sin", "cos", "log", "exp", "max", "min", "tr", "det")


@dataclass
class MathBox:
    width: float
    ascent: float
    descent: float
    draw: Callable[[Image.Image, float, float], None]  # (image, left x, baseline y)


def glyphs(s: str, file_name: str, size: float) -> MathBox:
    """The string ``s`` in the bundled font ``file_name`` at ``size`` px."""
    font = load_font(file_name, round(size))
    left, top, right, bottom = text_bbox(font, s)
    return MathBox(
        max(text_length(font, s), right), -top, max(0, bottom), lambda im, x, y: draw_text(im, (x, y), s, font, INK)
    )


def row(boxes: Sequence[MathBox], gap: float) -> MathBox:
    """``boxes`` side by side on a common baseline, ``gap`` px apart."""

    def draw(im, x, y):
        for b in boxes:
            b.draw(im, x, y)
            x += b.width + gap

    width = sum(b.width for b in boxes) + gap * (len(boxes) - 1)
    return MathBox(width, max(b.ascent for b in boxes), max(b.descent for b in boxes), draw)


def fraction(num: MathBox, den: MathBox, size: float) -> MathBox:
    """``num`` over ``den`` with a bar on the math axis of a ``size`` px font."""
    axis, gap, thickness = 0.28 * size, 0.18 * size, max(1.0, size / 14)
    width = max(num.width, den.width) + 0.3 * size

    def draw(im, x, y):
        bar = y - axis
        ImageDraw.Draw(im).rectangle([x, bar - thickness / 2, x + width, bar + thickness / 2], fill=INK)
        num.draw(im, x + (width - num.width) / 2, bar - gap - num.descent)
        den.draw(im, x + (width - den.width) / 2, bar + gap + den.ascent)

    return MathBox(width, axis + gap + num.ascent + num.descent, gap + den.ascent + den.descent - axis, draw)


def scripts(base: MathBox, sup: MathBox, sub: MathBox, size: float) -> MathBox:
    """``base`` with optional (None) superscript and subscript boxes."""
    up, down = 0.42 * size, 0.22 * size
    extra = [b for b in (sup, sub) if b is not None]
    width = base.width + 0.05 * size + max((b.width for b in extra), default=0)

    def draw(im, x, y):
        base.draw(im, x, y)
        if sup is not None:
            sup.draw(im, x + base.width + 0.05 * size, y - up)
        if sub is not None:
            sub.draw(im, x + base.width + 0.05 * size, y + down)

    ascent = max(base.ascent, up + sup.ascent if sup else 0)
    descent = max(base.descent, down + sub.descent if sub else 0)
    return MathBox(width, ascent, descent, draw)


def radical(inner: MathBox, size: float) -> MathBox:
    """``inner`` under a square-root sign with an overbar."""
    hook, pad = 0.55 * size, 0.12 * size
    top = inner.ascent + pad
    width = hook + inner.width + pad

    def draw(im, x, y):
        lw = max(1, round(size / 14))
        points = [
            (x, y - 0.35 * size),
            (x + 0.18 * size, y - 0.45 * size),
            (x + 0.3 * size, y + inner.descent),
            (x + hook, y - top),
            (x + width, y - top),
        ]
        ImageDraw.Draw(im).line(points, fill=INK, width=lw)
        inner.draw(im, x + hook + pad / 2, y)

    return MathBox(width, top + 1, inner.descent, draw)


def delimited(inner: MathBox, size: float, pair: str) -> MathBox:
    """``inner`` between the delimiters ``pair`` (e.g. "()", "[]") grown to its height."""
    height = inner.ascent + inner.descent
    delim_size = max(size, height * 1.05)
    left, right = (glyphs(c, _UPRIGHT, delim_size) for c in pair)
    centre_shift = (inner.ascent - inner.descent) / 2 - (left.ascent - left.descent) / 2

    def draw(im, x, y):
        left.draw(im, x, y - centre_shift)
        inner.draw(im, x + left.width + 0.08 * size, y)
        right.draw(im, x + left.width + inner.width + 0.16 * size, y - centre_shift)

    width = left.width + inner.width + right.width + 0.16 * size
    return MathBox(
        width, max(inner.ascent, left.ascent + centre_shift), max(inner.descent, left.descent - centre_shift), draw
    )


def big_operator(symbol: str, lower: MathBox, upper: MathBox, size: float) -> MathBox:
    """A large ∑/∏/∫ with limits centred below and above (``upper`` may be None)."""
    op = glyphs(symbol, _UPRIGHT, size * 1.7)
    width = max(op.width, lower.width, upper.width if upper else 0)
    gap = 0.15 * size

    def draw(im, x, y):
        op.draw(im, x + (width - op.width) / 2, y + 0.25 * size)
        lower.draw(im, x + (width - lower.width) / 2, y + 0.25 * size + op.descent + gap + lower.ascent)
        if upper is not None:
            upper.draw(im, x + (width - upper.width) / 2, y + 0.25 * size - op.ascent - gap - upper.descent)

    ascent = op.ascent - 0.25 * size + (gap + upper.ascent + upper.descent if upper else 0)
    descent = op.descent + 0.25 * size + gap + lower.ascent + lower.descent
    return MathBox(width, ascent, descent, draw)


class _ExpressionMaker:
    """Random formulas at font size ``size`` px."""

    def __init__(self, rng: np.random.Generator, size: float):
        self.rng, self.size = rng, size

    def symbol(self, size: float) -> MathBox:
        r = self.rng.random()
        if r < 0.6:
            return glyphs(str(self.rng.choice(list(_LATIN))), _ITALIC, size)
        if r < 0.85:
            return glyphs(str(self.rng.choice(list(GREEK))), _ITALIC, size)
        return glyphs(str(self.rng.integers(1, 20)), _UPRIGHT, size)

    def atom(self, size: float) -> MathBox:
        """A symbol with optional sub/superscripts, or a function application."""
        if self.rng.random() < 0.12:
            name = glyphs(str(self.rng.choice(_FUNCTIONS)), _UPRIGHT, size)
            return row([name, self.symbol(size)], 0.15 * size)
        small = size * 0.7
        sup = self.symbol(small) if self.rng.random() < 0.35 else None
        sub = self.symbol(small) if self.rng.random() < 0.35 else None
        base = self.symbol(size)
        return base if sup is None and sub is None else scripts(base, sup, sub, size)

    def term(self, size: float, depth: int) -> MathBox:
        r = self.rng.random() if depth > 0 else 1.0
        if r < 0.22:
            return fraction(self.expression(size * 0.9, depth - 1, 3), self.expression(size * 0.9, depth - 1, 3), size)
        if r < 0.3:
            return radical(self.expression(size, depth - 1, 2), size)
        if r < 0.4:
            return delimited(
                self.expression(size, depth - 1, 3), size, str(self.rng.choice(["()", "()", "[]", "{}", "||"]))
            )
        if r < 0.48:
            symbol = str(self.rng.choice(["∑", "∑", "∏", "∫"]))
            lower = row(
                [
                    self.symbol(size * 0.65),
                    glyphs("=", _UPRIGHT, size * 0.65),
                    glyphs(str(self.rng.integers(0, 2)), _UPRIGHT, size * 0.65),
                ],
                0,
            )
            upper = self.symbol(size * 0.65)
            return row([big_operator(symbol, lower, upper, size), self.term(size, depth - 1)], 0.15 * size)
        return row([self.atom(size) for _ in range(int(self.rng.integers(1, 3)))], 0.05 * size)

    def expression(self, size: float, depth: int, max_terms: int) -> MathBox:
        parts: List[MathBox] = [self.term(size, depth)]
        for _ in range(int(self.rng.integers(0, max_terms))):
            parts.append(glyphs(str(self.rng.choice(_OPERATORS)), _UPRIGHT, size))
            parts.append(self.term(size, depth))
        return row(parts, 0.22 * size)

    def equation(self) -> MathBox:
        lhs = self.atom(self.size)
        relation = glyphs(str(self.rng.choice(_RELATIONS)), _UPRIGHT, self.size)
        return row([lhs, relation, self.expression(self.size, 2, 4)], 0.3 * self.size)


def formula_block(rng: np.random.Generator, size: float, width: float, number: int, numbered: bool) -> Block:
    """A display formula of one or two equations, centred in ``width`` (px), with the equation
    number "(n)" flush right when ``numbered``; its FORMULA region includes the number.
    Equations wider than the column are regenerated smaller."""
    maker = _ExpressionMaker(rng, size)
    equations = [maker.equation() for _ in range(1 if rng.random() < 0.8 else 2)]
    while max(e.width for e in equations) > width * 0.85 and maker.size > 6:
        maker.size *= 0.85
        equations = [maker.equation() for _ in equations]
    label = glyphs(f"({number})", _UPRIGHT, size) if numbered else None
    gap = 0.5 * size
    height = sum(e.ascent + e.descent for e in equations) + gap * (len(equations) - 1) + 2
    image, _ = new_tile(width, height)
    y = 1.0
    for eq in equations:
        baseline = y + eq.ascent
        eq.draw(image, (width - eq.width) / 2, baseline)
        y = baseline + eq.descent + gap
    if label is not None:
        middle = equations[0].ascent if len(equations) == 1 else height / 2
        label.draw(image, width - label.width - 1, middle + label.ascent / 2 - 0.1 * size)
    return make_block(image, [Region(Role.FORMULA, rect=(0, 0, image.width, image.height))])
