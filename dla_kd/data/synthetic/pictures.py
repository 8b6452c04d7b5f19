"""Pictures: line/scatter plots and bar charts with axes, ticks and legends, pie charts,
box-and-arrow diagrams, photos (smooth random colour fields with blobs), multi-panel figures, and
photo cut-outs with a circular, elliptic or irregular outline whose PICTURE region is that
polygon. Sizes are pixels; photos are built as (H, W, 3) uint8 arrays.
"""

from typing import Callable, Dict, Tuple

import cv2
import numpy as np
from PIL import Image, ImageDraw

from . import text
from .block import Block, Region, Role, make_block, new_tile
from .fonts import Face, draw_text, text_bbox, text_length
from .typeset import INK

Box = Tuple[float, float, float, float]
_PALETTES = (
    ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)),
    ((0, 0, 0), (90, 90, 90), (150, 150, 150), (200, 200, 200), (50, 50, 50), (120, 120, 120)),
    ((0, 63, 92), (88, 80, 141), (188, 80, 144), (255, 99, 97), (255, 166, 0), (47, 75, 124)),
)


def _palette(rng: np.random.Generator):
    return _PALETTES[int(rng.choice([0, 0, 1, 2]))]


def _vertical_text(image: Image.Image, xy: Tuple[float, float], content: str, face: Face) -> None:
    """Paste ``content`` rotated by 90 degrees (reading upwards) with its top-left at ``xy``."""
    font = face.font()
    left, top, right, bottom = text_bbox(font, content, "lt")
    tile = Image.new("L", (int(right) + 3, int(bottom) + 3), 0)
    draw_text(tile, (1, 1), content, font, 255, "lt")
    mask = tile.rotate(90, expand=True)
    image.paste(INK, (int(xy[0]), int(xy[1])), mask)


def _smooth_series(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` values of a random smooth curve (trend + oscillation + noise)."""
    t = np.linspace(0, 1, n)
    kind = rng.integers(3)
    if kind == 0:
        y = np.cumsum(rng.normal(0, 1, n))
    elif kind == 1:
        y = np.sin(t * rng.uniform(2, 12) + rng.uniform(0, 6)) * rng.uniform(0.5, 2) + t * rng.normal(0, 2)
    else:
        y = np.exp(-t * rng.uniform(1, 6)) * rng.uniform(1, 3) + rng.normal(0, 0.05, n)
    return y + rng.normal(0, 0.03 * (np.ptp(y) + 1e-6), n)


def _dashed_line(draw: ImageDraw.ImageDraw, p: Tuple[float, float], q: Tuple[float, float], fill, dash: float) -> None:
    length = np.hypot(q[0] - p[0], q[1] - p[1])
    for s in np.arange(0, length, 2 * dash):
        a, b = s / length, min(1.0, (s + dash) / length)
        draw.line(
            [
                (p[0] + (q[0] - p[0]) * a, p[1] + (q[1] - p[1]) * a),
                (p[0] + (q[0] - p[0]) * b, p[1] + (q[1] - p[1]) * b),
            ],
            fill=fill,
        )


def _marker(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, shape: int, color) -> None:
    if shape == 0:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
    elif shape == 1:
        draw.rectangle([x - r, y - r, x + r, y + r], fill=color)
    else:
        draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=color)


def draw_chart(rng: np.random.Generator, image: Image.Image, box: Box, face: Face, kind: str) -> None:
    """A ``kind`` ("line", "scatter" or "bar") chart with axes, ticks, labels and maybe a legend
    and grid, filling ``box`` = (x0, y0, x1, y1) of ``image``."""
    tick_face = face.scaled(0.8)
    axes = _chart_axes(rng, image, box, tick_face, kind)
    if axes is None:
        return
    plot, n_x, palette = axes
    n_series = _chart_series(rng, ImageDraw.Draw(image), plot, n_x, kind, palette)
    if n_series > 1 and rng.random() < 0.7:
        _chart_legend(rng, image, plot, tick_face, palette, n_series)


def _chart_axes(rng: np.random.Generator, image: Image.Image, box: Box, tick_face: Face, kind: str):
    """Axes, ticks, tick labels, axis titles and maybe a frame and grid of a chart in ``box``;
    returns (plot area (left, top, right, bottom), number of x ticks, series colours), or None
    when the box leaves no room to plot."""
    draw = ImageDraw.Draw(image)
    tick_font = tick_face.font()
    x0, y0, x1, y1 = box
    y_step = float(rng.choice([0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 20, 25, 50, 100, 250, 500, 1000]))
    y_values = y_step * np.arange(int(rng.integers(4, 8)))
    y_labels = [f"{v:g}" for v in np.round(y_values, 2)]
    has_ylabel = rng.random() < 0.7
    left = x0 + max(text_length(tick_font, s) for s in y_labels) + tick_face.size * (2.2 if has_ylabel else 0.8)
    bottom = y1 - tick_face.size * (3.0 if rng.random() < 0.7 else 1.8)
    top, right = y0 + tick_face.size * 0.8, x1 - tick_face.size * 0.8
    if right - left < 20 or bottom - top < 20:
        return None
    palette, frame = _palette(rng), rng.random() < 0.6
    if rng.random() < 0.3:  # grid
        for v in range(1, len(y_values) - 1):
            y = bottom - (bottom - top) * v / (len(y_values) - 1)
            _dashed_line(draw, (left, y), (right, y), (190, 190, 190), 2)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=INK, width=1)
    if frame:
        draw.line([(left, top), (right, top), (right, bottom)], fill=INK, width=1)
    for k, label in enumerate(y_labels):
        y = bottom - (bottom - top) * k / (len(y_labels) - 1)
        draw.line([(left - 3, y), (left, y)], fill=INK)
        draw_text(image, (left - 5, y), label, tick_font, INK, "rm")
    n_x = int(rng.integers(4, 8))
    x_start = int(rng.choice([0, 1, 2000]))
    x_step = int(rng.choice([1, 2, 5, 10, 20]))
    word_labels = kind == "bar" and rng.random() < 0.5
    spacing = (right - left) / n_x
    for k in range(n_x):
        x = left + (right - left) * (k + 0.5 * (kind == "bar")) / (n_x - (kind != "bar"))
        draw.line([(x, bottom), (x, bottom + 3)], fill=INK)
        label = text.content_words(rng, 1)[0][:6] if word_labels else str(x_start + k * x_step)
        while len(label) > 1 and text_length(tick_font, label) > spacing * 0.9:
            label = label[:-1]
        draw_text(image, (x, bottom + 4), label, tick_font, INK, "mt")
    if bottom < y1 - tick_face.size * 2.5:
        draw_text(image, ((left + right) / 2, y1 - 2), text.heading(rng, 1, 3), tick_font, INK, "md")
    if has_ylabel:
        _vertical_text(image, (x0 + 1, (top + bottom) / 2 - 25), text.heading(rng, 1, 2)[:14], tick_face)
    return (left, top, right, bottom), n_x, palette


def _chart_series(rng: np.random.Generator, draw: ImageDraw.ImageDraw, plot, n_x: int, kind: str, palette) -> int:
    """Draw 1-3 data series (grouped bars at the ``n_x`` ticks, lines or scatter points) in the
    ``plot`` area (left, top, right, bottom); returns how many."""
    left, top, right, bottom = plot
    n_series = int(rng.integers(1, 4 if kind != "scatter" else 3))
    span_x, span_y = right - left, bottom - top
    if kind == "bar":
        group_w = span_x / n_x * 0.8
        bar_w = group_w / n_series
        for k in range(n_x):
            for s in range(n_series):
                h = span_y * float(rng.uniform(0.1, 0.95))
                bx = left + span_x * k / n_x + span_x / n_x * 0.1 + s * bar_w
                draw.rectangle(
                    [bx, bottom - h, bx + bar_w - 1, bottom],
                    fill=palette[s],
                    outline=INK if rng.random() < 0.3 else None,
                )
        return n_series
    for s in range(n_series):
        color = palette[s % len(palette)]
        if kind == "line":
            n = int(rng.integers(8, 60))
            ys = _smooth_series(rng, n)
            ys = (ys - ys.min()) / (np.ptp(ys) + 1e-9) * float(rng.uniform(0.4, 0.9)) + float(rng.uniform(0.02, 0.1))
            points = [(left + span_x * i / (n - 1), bottom - span_y * v) for i, v in enumerate(ys)]
            draw.line(points, fill=color, width=int(rng.choice([1, 1, 2])))
            if n < 25 and rng.random() < 0.6:
                for px, py in points:
                    _marker(draw, px, py, 2, s % 3, color)
        else:
            n = int(rng.integers(20, 120))
            xs = rng.uniform(0.03, 0.97, n)
            ys = np.clip(xs * rng.uniform(-0.8, 0.8) + 0.5 + rng.normal(0, 0.15, n), 0.03, 0.97)
            for px, py in zip(xs, ys):
                _marker(draw, left + span_x * px, bottom - span_y * py, 1.5, s % 3, color)
    return n_series


def _chart_legend(rng: np.random.Generator, image: Image.Image, plot, tick_face: Face, palette, n_series: int) -> None:
    """A legend of ``n_series`` entries in a top corner of the ``plot`` area, maybe boxed."""
    draw, tick_font = ImageDraw.Draw(image), tick_face.font()
    left, top, right, _ = plot
    labels = [text.heading(rng, 1, 2)[:12] for _ in range(n_series)]
    line_h = tick_face.size * 1.3
    lw = max(text_length(tick_font, s) for s in labels) + tick_face.size * 2.5
    lx, ly = (right - lw - 4, top + 4) if rng.random() < 0.6 else (left + 4, top + 4)
    if rng.random() < 0.5:
        draw.rectangle([lx, ly, lx + lw, ly + line_h * n_series + 4], outline=(120, 120, 120), fill=(255, 255, 255))
    for s, label in enumerate(labels):
        cy = ly + 2 + line_h * (s + 0.5)
        draw.line([(lx + 3, cy), (lx + tick_face.size * 1.6, cy)], fill=palette[s], width=2)
        draw_text(image, (lx + tick_face.size * 2, cy), label, tick_font, INK, "lm")


def draw_pie(rng: np.random.Generator, image: Image.Image, box: Box, face: Face) -> None:
    """A pie chart with a legend next to it in ``box``."""
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = box
    d = min(x1 - x0, y1 - y0) * 0.85
    cx, cy = x0 + d / 2 + 4, (y0 + y1) / 2
    fractions = rng.dirichlet(np.ones(int(rng.integers(3, 7))))
    palette, font = _palette(rng), face.scaled(0.8).font()
    start = 0.0
    for k, f in enumerate(fractions):
        draw.pieslice(
            [cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2],
            start,
            start + 360 * f,
            fill=palette[k % len(palette)],
            outline=(255, 255, 255),
        )
        start += 360 * f
    for k, f in enumerate(fractions):
        ly = y0 + 6 + k * face.size * 1.3
        if ly > y1 - face.size or cx + d / 2 + 40 > x1:
            break
        draw.rectangle(
            [cx + d / 2 + 8, ly, cx + d / 2 + 8 + face.size * 0.7, ly + face.size * 0.7], fill=palette[k % len(palette)]
        )
        draw_text(
            image,
            (cx + d / 2 + 12 + face.size, ly),
            f"{text.content_words(rng, 1)[0][:10]} {100 * f:.0f}%",
            font,
            INK,
            "lt",
        )


def draw_diagram(rng: np.random.Generator, image: Image.Image, box: Box, face: Face) -> None:
    """Labelled boxes on a grid joined by arrows (flow chart / block diagram) in ``box``."""
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = box
    rows, cols = int(rng.integers(1, 4)), int(rng.integers(2, 5))
    cell_w, cell_h = (x1 - x0) / cols, (y1 - y0) / rows
    node_w, node_h = cell_w * 0.7, min(cell_h * 0.6, face.size * 3.5)
    fill = tuple(int(v) for v in rng.integers(200, 256, size=3)) if rng.random() < 0.5 else (255, 255, 255)
    font = face.scaled(0.85).font()
    present = rng.random((rows, cols)) < 0.85
    centres = {}
    for r in range(rows):
        for c in range(cols):
            if not present[r, c]:
                continue
            cx, cy = x0 + cell_w * (c + 0.5), y0 + cell_h * (r + 0.5)
            rect = [cx - node_w / 2, cy - node_h / 2, cx + node_w / 2, cy + node_h / 2]
            if rng.random() < 0.5:
                draw.rounded_rectangle(rect, radius=face.size * 0.5, outline=INK, fill=fill)
            else:
                draw.rectangle(rect, outline=INK, fill=fill)
            label = text.heading(rng, 1, 2)
            while len(label) > 2 and text_length(font, label) > node_w - 4:
                label = label[:-1]
            draw_text(image, (cx, cy), label, font, INK, "mm")
            centres[r, c] = (cx, cy)
    for (r, c), (cx, cy) in centres.items():
        for (nr, nc), (nx, ny) in centres.items():
            if (nr, nc) in ((r, c + 1), (r + 1, c)) and rng.random() < 0.8:
                horizontal = nr == r
                start = (cx + node_w / 2, cy) if horizontal else (cx, cy + node_h / 2)
                end = (nx - node_w / 2, ny) if horizontal else (nx, ny - node_h / 2)
                draw.line([start, end], fill=INK, width=1)
                a = face.size * 0.4
                head = (
                    [(end[0] - a, end[1] - a / 2), (end[0] - a, end[1] + a / 2)]
                    if horizontal
                    else [(end[0] - a / 2, end[1] - a), (end[0] + a / 2, end[1] - a)]
                )
                draw.polygon([end] + head, fill=INK)


def _smooth_field(rng: np.random.Generator, width: int, height: int, cells: int, channels: int) -> np.ndarray:
    """(height, width, channels) float32 noise with about ``cells`` random values per side, upsampled."""
    coarse = rng.normal(0, 1, size=(cells, cells, channels)).astype(np.float32)
    field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return field.reshape(height, width, channels)


def photo(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A (height, width, 3) uint8 photo-like image: a "scene" (sky/ground gradient with shaded
    objects), "cells" (microscopy-like blobs on a plain or stained background) or a smooth
    "texture"; mid-frequency texture and sensor noise on top, a quarter in grey-scale."""
    kind = rng.choice(["scene", "cells", "texture"])
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    if kind == "scene":
        sky, ground = rng.uniform(60, 250, 3), rng.uniform(20, 200, 3)
        horizon = float(rng.uniform(0.3, 0.7))
        image = np.where(y < horizon, sky * (0.75 + 0.25 * y / horizon), ground * (1.1 - 0.4 * (y - horizon)))
        image = np.broadcast_to(image, (height, width, 3)).astype(np.float32).copy()
        for _ in range(int(rng.integers(2, 9))):
            color = tuple(float(v) for v in rng.uniform(0, 255, 3))
            centre = (int(rng.integers(0, width)), int(rng.integers(int(height * horizon * 0.6), height)))
            if rng.random() < 0.5:
                axes = (int(rng.integers(3, max(4, width // 4))), int(rng.integers(3, max(4, height // 4))))
                cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
            else:
                w, h = int(rng.integers(4, max(5, width // 3))), int(rng.integers(4, max(5, height // 2)))
                cv2.rectangle(image, (centre[0] - w // 2, centre[1] - h), (centre[0] + w // 2, centre[1]), color, -1)
        image = cv2.GaussianBlur(image, (0, 0), 0.8)
    elif kind == "cells":
        background = rng.uniform(200, 250, 3) if rng.random() < 0.5 else rng.uniform(10, 60, 3)
        image = np.broadcast_to(background.astype(np.float32), (height, width, 3)).copy()
        color = rng.uniform(60, 200, 3)
        r_max = max(3, min(width, height) // 12)
        for _ in range(int(rng.integers(15, 80))):
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            axes = (int(rng.integers(2, r_max)), int(rng.integers(2, r_max)))
            tone = tuple(float(v) for v in np.clip(color + rng.normal(0, 25, 3), 0, 255))
            cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, tone, -1)
        image = cv2.GaussianBlur(image, (0, 0), 1.2)
    else:
        base = rng.uniform(60, 200, 3).astype(np.float32)
        luminance = _smooth_field(rng, width, height, int(rng.integers(2, 6)), 1) * float(rng.uniform(25, 60))
        image = base + luminance + _smooth_field(rng, width, height, 3, 3) * 20
    detail = _smooth_field(rng, width, height, max(2, min(width, height) // 6), 1)
    image += cv2.GaussianBlur(detail, (0, 0), 1.5).reshape(height, width, 1) * float(rng.uniform(4, 14))
    image += rng.normal(0, float(rng.uniform(2, 8)), size=image.shape).astype(np.float32)
    if rng.random() < 0.25:
        image[:] = image.mean(axis=2, keepdims=True)
    return np.clip(image, 0, 255).astype(np.uint8)


def outline_polygon(rng: np.random.Generator, width: float, height: float) -> np.ndarray:
    """An (N, 2) outline inside a ``width`` x ``height`` box: circle/ellipse or an irregular blob."""
    n = 48
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    radius = np.ones(n)
    if rng.random() < 0.5:
        for k in range(2, 6):
            radius += rng.uniform(0, 0.12) * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
    radius /= radius.max()
    rx, ry = width / 2 - 1, height / 2 - 1
    if rng.random() < 0.4:  # circle
        rx = ry = min(rx, ry)
    return np.stack([width / 2 + rx * radius * np.cos(theta), height / 2 + ry * radius * np.sin(theta)], axis=1)


def _photo_into(rng: np.random.Generator, image: Image.Image, box: Box, face: Face) -> None:
    x0, y0, x1, y1 = (int(v) for v in box)
    image.paste(Image.fromarray(photo(rng, max(1, x1 - x0), max(1, y1 - y0))), (x0, y0))


_PANEL_DRAWERS: Dict[str, Callable] = {
    "line": lambda rng, im, box, face: draw_chart(rng, im, box, face, "line"),
    "scatter": lambda rng, im, box, face: draw_chart(rng, im, box, face, "scatter"),
    "bar": lambda rng, im, box, face: draw_chart(rng, im, box, face, "bar"),
    "pie": draw_pie,
    "diagram": draw_diagram,
    "photo": _photo_into,
}
PICTURE_KINDS = tuple(_PANEL_DRAWERS) + ("panels", "cutout")
MIN_CHART_SIZE = (80, 60)  # (width, height) px


def picture_block(rng: np.random.Generator, kind: str, width: float, height: float, face: Face) -> Block:
    """A ``width`` x ``height`` picture of ``kind`` (see :data:`PICTURE_KINDS`): one drawer of
    :data:`_PANEL_DRAWERS`, a grid of "(a)"-labelled panels, or a photo "cutout" with a
    non-rectangular outline. Charts, diagrams and panels need about :data:`MIN_CHART_SIZE` px
    per chart; smaller pictures are drawn as photos."""
    image, draw = new_tile(width, height)
    rows, cols = (1, 2) if rng.random() < 0.6 else (2, 2)
    min_w, min_h = MIN_CHART_SIZE
    if kind == "panels":
        rows = rows if height / rows >= min_h else 1
        if width / cols < min_w or height / rows < min_h:
            kind = "photo"
    elif kind not in ("cutout", "photo") and (width < min_w or height < min_h):
        kind = "photo"
    if kind == "cutout":
        polygon = outline_polygon(rng, image.width, image.height)
        mask = Image.new("L", image.size, 0)
        ImageDraw.Draw(mask).polygon([tuple(p) for p in polygon], fill=255)
        image.paste(Image.fromarray(photo(rng, image.width, image.height)), (0, 0), mask)
        return Block(image, [Region(Role.PICTURE, polygon=polygon)])
    if kind == "panels":
        panel_kind = str(rng.choice(["line", "scatter", "bar", "photo"]))
        label_h = face.size * 1.4
        font = face.font()
        for r in range(rows):
            for c in range(cols):
                box = (
                    width * c / cols + 2,
                    height * r / rows + 2,
                    width * (c + 1) / cols - 2,
                    height * (r + 1) / rows - label_h,
                )
                _PANEL_DRAWERS[panel_kind](rng, image, box, face)
                draw_text(image, ((box[0] + box[2]) / 2, box[3] + 2), f"({'abcd'[r * cols + c]})", font, INK, "mt")
    else:
        _PANEL_DRAWERS[kind](rng, image, (0, 0, width, height), face)
    if kind == "photo" and rng.random() < 0.4:
        draw.rectangle([0, 0, image.width - 1, image.height - 1], outline=INK)
    return make_block(image, [Region(Role.PICTURE, rect=(0, 0, image.width, image.height))])
