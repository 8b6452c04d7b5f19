"""Dataset styles and document genres.

A :class:`Genre` describes one kind of document (scientific article, financial report, manual,
patent, law, tender, medical article): fonts, column counts, how often each element occurs.
A :class:`StyleSpec` describes one target dataset: which genres it draws pages from, its default
image size, how the document page sits in the image, and how roles map to its categories.

* ``publaynet``: medical articles (two columns typical); 612x792 images (letter at 72 dpi, like
  PubLayNet) filled by the page. Section headings are ``title``, captions and footnotes are
  ``text``, a whole list is one ``list`` object, page headers/footers are drawn but not annotated.
* ``doclaynet``: DocLayNet's genre mix; 768x768 images (DocLayNet publishes 1025x1025 squares)
  with a letter-proportioned portrait page (sometimes landscape) centred on a white canvas; all
  11 classes, one List-item per item.
* ``publaynet_as_doclaynet``: the ``publaynet`` pages (same seed, split and index: the same image)
  labelled in DocLayNet's table, for scoring a DocLayNet model on the other domain. Only the
  blocks PubLayNet annotates are labelled (page headers/footers are not); their DocLayNet classes
  are finer (Caption, Footnote, Formula, Section-header, one List-item per item).
"""

from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

import numpy as np

from dla_kd.data.categories import get_categories

from .block import Role
from .fonts import MONO_FAMILIES, SANS_FAMILIES, SERIF_FAMILIES
from .pictures import PICTURE_KINDS
from .table import TABLE_STYLES

# Relative weights of the body elements the page composer draws from.
ELEMENTS = ("paragraph", "heading", "list", "figure", "table", "formula", "wrapped_cutout")


@dataclass(frozen=True, eq=False)
class Genre:
    name: str
    body_families: Tuple[str, ...]
    body_pt: Tuple[float, float]  # body font size range in points
    columns: Dict[int, float]  # number of columns -> probability
    elements: Dict[str, float]  # ELEMENTS -> weight
    picture_kinds: Tuple[str, ...]  # of pictures.PICTURE_KINDS (repeat for weight)
    table_styles: Tuple[str, ...]  # of table.TABLE_STYLES (repeat for weight)
    heading_numbering: Tuple[str, ...]  # "decimal", "roman", "section", "article", "none"
    lead_in: str = "runin"  # paragraph openers: "runin" (bold phrase), "patent" ([0012]), "none"
    first_page_prob: float = 0.2  # pages with the document title (and front matter)
    abstract: bool = False  # first pages carry authors, affiliations and an abstract
    colored_headings: float = 0.0  # probability of coloured section headers
    justify_prob: float = 0.7
    footnote_prob: float = 0.25
    list_items: Tuple[int, int] = (2, 7)
    paragraph_sentences: Tuple[int, int] = (1, 7)

    def __post_init__(self):
        assert set(self.elements) <= set(ELEMENTS), self.elements
        assert set(self.picture_kinds) <= set(PICTURE_KINDS), self.picture_kinds
        assert set(self.table_styles) <= set(TABLE_STYLES), self.table_styles


SCIENTIFIC = Genre(
    "scientific",
    SERIF_FAMILIES + ("dejavu-sans",),
    (8.5, 10.5),
    {1: 0.25, 2: 0.75},
    {"paragraph": 6, "heading": 1.6, "list": 0.6, "figure": 1.0, "table": 0.7, "formula": 2.0, "wrapped_cutout": 0.05},
    ("line", "line", "scatter", "bar", "panels", "diagram", "photo"),
    ("booktabs", "booktabs", "grid", "unruled"),
    ("decimal", "decimal", "roman", "none"),
    first_page_prob=0.2,
    abstract=True,
    footnote_prob=0.3,
    paragraph_sentences=(1, 5),
)
FINANCIAL = Genre(
    "financial",
    SANS_FAMILIES + ("stix",),
    (8.0, 11.0),
    {1: 0.5, 2: 0.35, 3: 0.15},
    {"paragraph": 3, "heading": 3.0, "list": 1.2, "figure": 0.6, "table": 2.0, "wrapped_cutout": 0.1},
    ("bar", "bar", "pie", "line", "photo", "cutout"),
    ("shaded", "unruled", "unruled", "booktabs", "grid"),
    ("none", "none", "decimal"),
    first_page_prob=0.1,
    colored_headings=0.5,
    justify_prob=0.4,
    footnote_prob=0.35,
    paragraph_sentences=(1, 3),
)
MANUAL = Genre(
    "manual",
    SANS_FAMILIES + ("dejavu-serif", "dejavu-mono"),
    (8.5, 12.0),
    {1: 0.6, 2: 0.3, 3: 0.1},
    {"paragraph": 3, "heading": 2.5, "list": 2.5, "figure": 1.2, "table": 0.5, "wrapped_cutout": 0.6},
    ("photo", "photo", "diagram", "diagram", "cutout", "panels"),
    ("grid", "shaded", "unruled"),
    ("decimal", "decimal", "none"),
    first_page_prob=0.1,
    colored_headings=0.5,
    justify_prob=0.3,
    footnote_prob=0.1,
    list_items=(2, 9),
    paragraph_sentences=(1, 4),
)
PATENT = Genre(
    "patent",
    SERIF_FAMILIES,
    (9.0, 11.0),
    {2: 1.0},
    {"paragraph": 7, "heading": 0.5, "list": 0.3, "figure": 0.3, "table": 0.3, "formula": 0.3},
    ("diagram", "line"),
    ("grid", "unruled"),
    ("none",),
    lead_in="patent",
    first_page_prob=0.1,
    justify_prob=0.9,
    footnote_prob=0.0,
)
LAW = Genre(
    "law",
    SERIF_FAMILIES + SANS_FAMILIES,
    (9.0, 12.0),
    {1: 0.8, 2: 0.2},
    {"paragraph": 4, "heading": 2.2, "list": 3.0, "table": 0.3},
    ("diagram",),
    ("grid", "unruled"),
    ("section", "article", "decimal"),
    first_page_prob=0.1,
    footnote_prob=0.45,
    list_items=(2, 8),
    paragraph_sentences=(1, 4),
)
TENDER = Genre(
    "tender",
    SANS_FAMILIES + MONO_FAMILIES[:1] + ("dejavu-serif",),
    (9.0, 11.0),
    {1: 0.85, 2: 0.15},
    {"paragraph": 4, "heading": 2.5, "list": 2.0, "figure": 0.3, "table": 1.5},
    ("photo", "diagram", "bar"),
    ("grid", "grid", "shaded"),
    ("decimal", "decimal", "roman"),
    first_page_prob=0.15,
    colored_headings=0.3,
    justify_prob=0.5,
    list_items=(2, 8),
    paragraph_sentences=(1, 4),
)
MEDICAL = Genre(
    "medical",
    SERIF_FAMILIES + ("dejavu-sans",),
    (8.0, 10.0),
    {1: 0.15, 2: 0.85},
    {"paragraph": 7, "heading": 1.0, "list": 0.35, "figure": 1.0, "table": 0.8},
    ("line", "bar", "scatter", "photo", "photo", "panels", "diagram"),
    ("booktabs", "booktabs", "grid", "unruled"),
    ("none", "none", "decimal"),
    first_page_prob=0.25,
    abstract=True,
    justify_prob=0.9,
    footnote_prob=0.2,
)


@dataclass(frozen=True, eq=False)
class StyleSpec:
    name: str  # the category table of the style's annotations (dla_kd.data.categories)
    page_size: Tuple[int, int]  # default image (width, height) px
    letter_page: bool  # True: a letter-proportioned page centred in the image; False: page = image
    landscape_prob: float
    genres: Dict[Genre, float]
    category_names: Dict[Role, Optional[str]]  # None: drawn, not annotated
    merge_list_items: bool  # one object per list instead of per item

    def category_ids(self) -> Dict[Role, Optional[int]]:
        """Role -> category id of this style's table (None for unannotated roles)."""
        ids = {c["name"]: c["id"] for c in get_categories(self.name)}
        return {role: (None if name is None else ids[name]) for role, name in self.category_names.items()}

    def sample_genre(self, rng: np.random.Generator) -> Genre:
        genres = list(self.genres)
        p = np.array([self.genres[g] for g in genres])
        return genres[int(rng.choice(len(genres), p=p / p.sum()))]


_PUBLAYNET_NAMES = {
    Role.TEXT: "text",
    Role.CAPTION: "text",
    Role.FOOTNOTE: "text",
    Role.FORMULA: "text",
    Role.TITLE: "title",
    Role.SECTION_HEADER: "title",
    Role.LIST_ITEM: "list",
    Role.TABLE: "table",
    Role.PICTURE: "figure",
    Role.PAGE_HEADER: None,
    Role.PAGE_FOOTER: None,
}

_DOCLAYNET_NAMES = {Role.of_category_name(c["name"]): c["name"] for c in get_categories("doclaynet")}

STYLES: Dict[str, StyleSpec] = {
    "publaynet": StyleSpec(
        "publaynet",
        (612, 792),
        letter_page=False,
        landscape_prob=0.0,
        genres={MEDICAL: 1.0},
        category_names=_PUBLAYNET_NAMES,
        merge_list_items=True,
    ),
    "doclaynet": StyleSpec(
        "doclaynet",
        (768, 768),
        letter_page=True,
        landscape_prob=0.1,
        genres={FINANCIAL: 0.32, MANUAL: 0.21, SCIENTIFIC: 0.17, LAW: 0.16, PATENT: 0.08, TENDER: 0.06},
        category_names=_DOCLAYNET_NAMES,
        merge_list_items=False,
    ),
}

# The publaynet pages (drawing depends on genre, page size and frame, not on labels), the blocks
# PubLayNet annotates labelled in DocLayNet's classes.
STYLES["publaynet_as_doclaynet"] = replace(
    STYLES["publaynet"],
    name="doclaynet",
    category_names={role: (None if _PUBLAYNET_NAMES[role] is None else name) for role, name in _DOCLAYNET_NAMES.items()},
    merge_list_items=False,
)


def get_style(name: str) -> StyleSpec:
    try:
        return STYLES[name]
    except KeyError:
        raise KeyError(f"Unknown synthetic style {name!r}; known: {sorted(STYLES)}") from None
