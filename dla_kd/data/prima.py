"""The PRImA Layout Analysis Dataset: PAGE-XML pages -> Detectron2 dicts / COCO json.

PAGE-XML (``<PcGts>`` in any of the 2010-03-19, 2013-07-15, 2017-07-15, 2019-07-15
``http://schema.primaresearch.org/PAGE/gts/pagecontent/<version>`` namespaces, or none) holds one
``<Page imageFilename= imageWidth= imageHeight=>`` with ``*Region`` elements, each outlined by
``<Coords points="x,y x,y ..."/>`` (2013+) or ``<Coords><Point x= y=/>...</Coords>`` (2010).

Regions map to the 6 classes of layout-parser's PRImA models (``PRIMA_CATEGORIES`` in
``categories.py``; Layout-Parser/layout-model-training ``tools/convert_prima_to_coco.py``):

===============================================  ===============
PAGE region element                              class
===============================================  ===============
TextRegion (every ``@type``: paragraph, heading,  TextRegion
caption, header, footer, page-number, ...)
ImageRegion, GraphicRegion, ChartRegion          ImageRegion
TableRegion                                      TableRegion
MathsRegion                                      MathsRegion
SeparatorRegion                                  SeparatorRegion
LineDrawingRegion, NoiseRegion, FrameRegion,     OtherRegion
ChemRegion, MusicRegion, MapRegion, AdvertRegion,
UnknownRegion, CustomRegion, any other *Region
===============================================  ===============

Every region counts, nested ones too (as in layout-parser). The PAGE element name and ``@type``
are kept on each annotation (``page_region``, ``page_region_type``). Points are clipped to the
page; regions with fewer than 3 points or a zero-width/height box are dropped with a warning.

Split layout under ``$DETECTRON2_DATASETS/PRImA/`` (``tools/convert_prima_to_coco.py`` writes the
jsons from ``XML/`` and ``Images/``)::

    PRImA/Images/*.tif                 page images
    PRImA/XML/*.xml                    PAGE-XML ground truth (not read at training time)
    PRImA/annotations-train.json       registered as prima_train
    PRImA/annotations-val.json         registered as prima_val
"""

import logging
import os
import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from detectron2.structures import BoxMode

from .categories import PRIMA_CATEGORIES
from .coco_layout import CorruptAnnotationError, DatasetNotFoundError

logger = logging.getLogger(__name__)

PAGE_NAMESPACE_PREFIX = "http://schema.primaresearch.org/PAGE/gts/pagecontent/"
PAGE_VERSIONS = ("2010-03-19", "2013-07-15", "2017-07-15", "2019-07-15")
# PAGE region element -> PRImA class name; any other "*Region" element -> OTHER_REGION.
PAGE_REGION_TO_CATEGORY: Dict[str, str] = {
    "TextRegion": "TextRegion",
    "ImageRegion": "ImageRegion",
    "GraphicRegion": "ImageRegion",
    "ChartRegion": "ImageRegion",
    "TableRegion": "TableRegion",
    "MathsRegion": "MathsRegion",
    "SeparatorRegion": "SeparatorRegion",
}
OTHER_REGION = "OtherRegion"
IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
MIN_POLYGON_POINTS = 3


@dataclass
class PageRegion:
    region_id: str
    element: str  # PAGE element name, e.g. "TextRegion"
    region_type: str  # its @type ("" when absent), e.g. "heading"
    points: List[Tuple[float, float]]


@dataclass
class PageAnnotation:
    xml_file: str
    image_filename: str
    width: int
    height: int
    regions: List[PageRegion] = field(default_factory=list)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def _parse_points(xml_file: str, region: ET.Element, where: str) -> List[Tuple[float, float]]:
    coords = next((c for c in region if _local(c.tag) == "Coords"), None)
    if coords is None:
        raise CorruptAnnotationError(f"{xml_file}: {where} has no <Coords>")
    try:
        if coords.get("points") is not None:
            return [tuple(float(v) for v in pair.split(",")) for pair in coords.get("points").split()]
        return [(float(p.get("x")), float(p.get("y"))) for p in coords if _local(p.tag) == "Point"]
    except (TypeError, ValueError) as e:
        raise CorruptAnnotationError(f"{xml_file}: {where} has malformed <Coords> ({e})") from e


def parse_page_xml(xml_file: str) -> PageAnnotation:
    """Read one PAGE-XML file. Raises :class:`CorruptAnnotationError` naming the file when it is
    not well-formed XML, not PAGE (root not ``PcGts``), lacks ``<Page>`` or its size, or has a
    region with missing/malformed coordinates."""
    try:
        root = ET.parse(xml_file).getroot()
    except ET.ParseError as e:
        raise CorruptAnnotationError(f"{xml_file}: not well-formed XML ({e})") from e
    namespace = _namespace(root.tag)
    if _local(root.tag) != "PcGts" or (namespace and not namespace.startswith(PAGE_NAMESPACE_PREFIX)):
        raise CorruptAnnotationError(f"{xml_file}: not PAGE-XML (root element {root.tag}, expected PcGts)")
    if namespace and namespace[len(PAGE_NAMESPACE_PREFIX) :].split("/")[0] not in PAGE_VERSIONS:
        logger.warning(f"{xml_file}: PAGE schema {namespace} is not one of {PAGE_VERSIONS}; reading it anyway")
    page = next((el for el in root if _local(el.tag) == "Page"), None)
    if page is None:
        raise CorruptAnnotationError(f"{xml_file}: no <Page> element")
    try:
        width, height = int(page.get("imageWidth")), int(page.get("imageHeight"))
    except (TypeError, ValueError) as e:
        raise CorruptAnnotationError(f"{xml_file}: <Page> lacks a valid imageWidth/imageHeight ({e})") from e
    if width <= 0 or height <= 0 or not page.get("imageFilename"):
        raise CorruptAnnotationError(
            f"{xml_file}: <Page> has size {width}x{height} / imageFilename {page.get('imageFilename')!r}"
        )
    annotation = PageAnnotation(xml_file, page.get("imageFilename"), width, height)
    for element in page.iter():
        name = _local(element.tag)
        if not name.endswith("Region"):
            continue
        region_id = element.get("id", "?")
        points = _parse_points(xml_file, element, f"{name} {region_id!r}")
        annotation.regions.append(PageRegion(region_id, name, element.get("type", ""), points))
    return annotation


def category_of(element: str) -> str:
    """PRImA class name of a PAGE region element (see the module table)."""
    return PAGE_REGION_TO_CATEGORY.get(element, OTHER_REGION)


def image_names_by_lower_case(image_dir: str) -> Dict[str, List[str]]:
    """File names in ``image_dir`` grouped by their lower-case form."""
    names: Dict[str, List[str]] = {}
    with os.scandir(image_dir) as entries:
        for entry in entries:
            if entry.is_file():
                names.setdefault(entry.name.lower(), []).append(entry.name)
    return names


def find_page_image(page: PageAnnotation, image_dir: str, names_by_lower_case: Optional[Dict] = None) -> str:
    """The image of ``page`` in ``image_dir``: its ``imageFilename`` (base name), else the same
    stem with another image extension (e.g. converted to PNG), else the XML's stem without the
    ``pc-`` prefix. Each candidate is looked up exactly, then ignoring letter case (PRImA's own
    example page names its image in another case than the file): a single file that fits is
    taken, several (names differing only in case) are an error naming them.
    ``names_by_lower_case``: :func:`image_names_by_lower_case` of ``image_dir``, when already
    listed. Raises :class:`CorruptAnnotationError` naming XML and folder if no file fits."""
    wanted = os.path.basename(page.image_filename.replace("\\", "/"))
    stems = [os.path.splitext(wanted)[0], os.path.splitext(os.path.basename(page.xml_file))[0].replace("pc-", "", 1)]
    candidates = [wanted] + [stem + ext for stem in stems for ext in IMAGE_EXTENSIONS]
    for name in candidates:
        path = os.path.join(image_dir, name)
        if os.path.isfile(path):
            return path
    if names_by_lower_case is None:
        names_by_lower_case = image_names_by_lower_case(image_dir)
    for name in candidates:
        matches = sorted(names_by_lower_case.get(name.lower(), []))
        if len(matches) == 1:
            return os.path.join(image_dir, matches[0])
        if matches:
            raise CorruptAnnotationError(
                f"{page.xml_file}: its image {wanted} matches several files that differ only in letter case "
                f"in {image_dir}: {', '.join(matches)}"
            )
    raise CorruptAnnotationError(f"{page.xml_file}: its image {wanted} is not in {image_dir}")


def _polygon_area(flat: Sequence[float]) -> float:
    xs, ys = flat[0::2], flat[1::2]
    return 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))


def page_to_record(
    page: PageAnnotation, image_path: str, image_id: int, categories=PRIMA_CATEGORIES
) -> Tuple[Dict, Dict]:
    """Detectron2 dict of one page (polygons clipped to the page; ``category_id`` contiguous in
    ``categories``) and the counts of dropped regions ``{"few_points": n, "empty_box": m}``."""
    contiguous = {c["name"]: i for i, c in enumerate(categories)}
    dropped = {"few_points": 0, "empty_box": 0}
    annotations = []
    for region in page.regions:
        if len(region.points) < MIN_POLYGON_POINTS:
            dropped["few_points"] += 1
            continue
        xs = [min(max(x, 0.0), float(page.width)) for x, _ in region.points]
        ys = [min(max(y, 0.0), float(page.height)) for _, y in region.points]
        x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        if x1 <= x0 or y1 <= y0:
            dropped["empty_box"] += 1
            continue
        annotations.append(
            {
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": contiguous[category_of(region.element)],
                "segmentation": [[v for xy in zip(xs, ys) for v in xy]],
                "iscrowd": 0,
                "page_region": region.element,
                "page_region_type": region.region_type,
            }
        )
    record = {
        "file_name": image_path,
        "height": page.height,
        "width": page.width,
        "image_id": image_id,
        "page_xml": page.xml_file,
        "annotations": annotations,
    }
    return record, dropped


def load_prima_page_xml(
    xml_dir: str, image_dir: str, dataset_name: str = "", errors: Optional[List[str]] = None
) -> List[Dict]:
    """Detectron2 dicts of every ``*.xml`` page in ``xml_dir`` (sorted by name; ``image_id`` 1, 2, ...),
    images from ``image_dir``. Missing folders raise :class:`DatasetNotFoundError`; corrupt files
    and missing images raise :class:`CorruptAnnotationError` naming the file, unless ``errors``
    (a list) is given: then such a page is skipped, its message appended to ``errors``, and the
    other pages are still read (``image_id`` stays the page's rank among all XML files)."""
    label = f"dataset {dataset_name!r}: " if dataset_name else ""
    for path, kind in ((xml_dir, "PAGE-XML folder"), (image_dir, "image folder")):
        if not os.path.isdir(path):
            raise DatasetNotFoundError(f"{label}{kind} {path} not found (PRImA layout: see dla_kd/data/prima.py)")
    xml_files = sorted(f for f in os.listdir(xml_dir) if f.lower().endswith(".xml"))
    if not xml_files:
        raise DatasetNotFoundError(f"{label}no *.xml file in {xml_dir}")
    records, dropped = [], {"few_points": 0, "empty_box": 0}
    names_by_lower_case = image_names_by_lower_case(image_dir)
    for image_id, name in enumerate(xml_files, start=1):
        try:
            page = parse_page_xml(os.path.join(xml_dir, name))
            record, page_dropped = page_to_record(page, find_page_image(page, image_dir, names_by_lower_case), image_id)
        except CorruptAnnotationError as e:
            if errors is None:
                raise
            errors.append(str(e))
            continue
        records.append(record)
        for k, v in page_dropped.items():
            dropped[k] += v
    logger.info(
        f"{label}{len(records)} PAGE-XML pages, {sum(len(r['annotations']) for r in records)} regions from {xml_dir}"
    )
    if any(dropped.values()):
        logger.warning(
            f"{xml_dir}: dropped {dropped['few_points']} regions with < {MIN_POLYGON_POINTS} points and "
            f"{dropped['empty_box']} with a zero-width/height box"
        )
    return records


def split_records(records: List[Dict], val_fraction: float = 0.2, seed: int = 0) -> Tuple[List[Dict], List[Dict]]:
    """Deterministic random page split ``(train, val)`` with ``round(val_fraction * n)`` val pages."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    num_val = int(round(val_fraction * len(records)))
    val_ids = set(order[:num_val])
    return [r for i, r in enumerate(records) if i not in val_ids], [r for i, r in enumerate(records) if i in val_ids]


def records_to_coco(
    records: List[Dict], image_root: str, categories=PRIMA_CATEGORIES, info: Optional[Dict] = None
) -> Dict:
    """COCO json dict of Detectron2 page dicts (``file_name`` made relative to ``image_root``;
    contiguous category ids back to the table's dataset ids)."""
    images, annotations = [], []
    for record in records:
        images.append(
            {
                "id": record["image_id"],
                "file_name": os.path.relpath(record["file_name"], image_root),
                "width": record["width"],
                "height": record["height"],
            }
        )
        for ann in record["annotations"]:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": record["image_id"],
                    "category_id": categories[ann["category_id"]]["id"],
                    "bbox": [round(v, 2) for v in ann["bbox"]],
                    "segmentation": ann["segmentation"],
                    "area": _polygon_area(ann["segmentation"][0]),
                    "iscrowd": ann["iscrowd"],
                    "page_region": ann["page_region"],
                    "page_region_type": ann["page_region_type"],
                }
            )
    return {
        "info": info or {"description": "PRImA Layout Analysis Dataset (PAGE-XML converted by dla-kd)"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c["id"], "name": c["name"], "supercategory": "layout"} for c in categories],
    }
