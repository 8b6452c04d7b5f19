"""Synthetic document pages with COCO annotations for layout analysis.

``generate_dataset(style, num_images, out_dir, seed, split)`` writes ``out_dir/<split>/*.png`` and
``out_dir/<split>.json`` (see :mod:`.generator` for the layout on disk and determinism, and
:mod:`.styles` for the "publaynet" and "doclaynet" styles). Pages are composed from real glyph
text in matplotlib's bundled fonts, section headers, lists, captions, footnotes, page
headers/footers, display formulas, tables, plots/photos/diagrams (some with non-rectangular
outlines), and then scan-degraded.

Modules, one job each: ``fonts`` (bundled fonts, supersampled text drawing), ``text``
(pseudo-language content), ``typeset`` (line breaking), ``block`` (tiles and regions),
``text_blocks``, ``formula``, ``table``, ``pictures`` (element builders), ``styles`` (dataset
styles, document genres), ``layout`` (page composition), ``degrade`` (scan effects), ``coco``
(records and json), ``generator`` (driver).
"""

from .coco import category_counts
from .generator import generate_dataset, render_page
from .styles import STYLES, StyleSpec, get_style

__all__ = ["generate_dataset", "render_page", "category_counts", "STYLES", "StyleSpec", "get_style"]
