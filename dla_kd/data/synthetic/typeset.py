"""Line breaking, alignment and drawing of styled text runs.

Units are pixels with y pointing down. A :class:`Run` is one unbreakable piece of text (a word, a
bold lead-in word, a superscript marker); :func:`set_lines` breaks runs into :class:`Line` objects
for a given width and alignment, :func:`draw_lines` draws them at a line pitch.
"""

from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

from PIL import Image, ImageFont

from .fonts import Face, draw_text, font_for, text_length

Color = Tuple[int, int, int]
INK: Color = (0, 0, 0)
ALIGNMENTS = ("justify", "left", "center", "right")
# A justified line whose gaps would grow beyond this many spaces is set ragged instead.
_MAX_JUSTIFY_STRETCH = 4.0


@dataclass
class Run:
    """Unbreakable text piece; ``rise`` lifts it above the baseline (px), ``space_before`` says
    whether an inter-word space separates it from the previous run."""

    text: str
    font: ImageFont.FreeTypeFont
    fill: Color = INK
    rise: int = 0
    space_before: bool = True
    width: float = field(init=False)

    def __post_init__(self):
        self.width = text_length(self.font, self.text)


def runs_from_text(text: str, face: Face, weight: str = "regular", fill: Color = INK) -> List[Run]:
    """One run per whitespace-separated word of ``text``."""
    return [Run(word, font_for(face, weight, word), fill) for word in text.split()]


@dataclass
class Line:
    """Runs of one line; ``xs[i]`` is the left edge of ``runs[i]`` relative to the text block's left
    edge (indent and alignment applied); ``right`` is the line's right end."""

    runs: List[Run]
    xs: List[float]

    @property
    def right(self) -> float:
        return self.xs[-1] + self.runs[-1].width


def _break(runs: Sequence[Run], widths: Sequence[float], space: float) -> List[List[Run]]:
    """Greedy line breaking: ``widths[k]`` is the room of line k (the last value repeats)."""
    lines: List[List[Run]] = [[]]
    used = 0.0
    for run in runs:
        room = widths[min(len(lines) - 1, len(widths) - 1)]
        gap = space if (lines[-1] and run.space_before) else 0.0
        if lines[-1] and used + gap + run.width > room and run.space_before:
            lines.append([])
            used, gap = 0.0, 0.0
        lines[-1].append(run)
        used += gap + run.width
    return [line for line in lines if line]


def set_lines(
    runs: Sequence[Run],
    width: float,
    face: Face,
    align: str = "justify",
    first_indent: float = 0.0,
    rest_indent: float = 0.0,
) -> List[Line]:
    """Break ``runs`` into lines of ``width`` px (minus indents) with the inter-word space of
    ``face``. Justified paragraphs keep their last line ragged."""
    assert align in ALIGNMENTS, align
    space = face.space_width
    indents = (first_indent, rest_indent)
    groups = _break(runs, [width - first_indent, width - rest_indent], space)
    lines = []
    for k, group in enumerate(groups):
        indent = indents[min(k, 1)]
        gaps = [space if (i and r.space_before) else 0.0 for i, r in enumerate(group)]
        slack = width - indent - sum(r.width for r in group) - sum(gaps)
        n_gaps = sum(1 for g in gaps if g)
        offset = {"center": slack / 2, "right": slack}.get(align, 0.0)
        stretch = 0.0
        if align == "justify" and k < len(groups) - 1 and n_gaps and 0 < slack <= _MAX_JUSTIFY_STRETCH * space * n_gaps:
            stretch = slack / n_gaps
        xs, x = [], indent + max(0.0, offset)
        for run, gap in zip(group, gaps):
            x += gap + (stretch if gap else 0.0)
            xs.append(x)
            x += run.width
        lines.append(Line(group, xs))
    return lines


def draw_lines(image: Image.Image, lines: Sequence[Line], left: float, first_baseline: float, pitch: float) -> None:
    """Draw ``lines`` with the first baseline at ``first_baseline`` and ``pitch`` px between baselines."""
    for k, line in enumerate(lines):
        baseline = first_baseline + k * pitch
        for run, x in zip(line.runs, line.xs):
            draw_text(image, (left + x, baseline - run.rise), run.text, run.font, run.fill)
