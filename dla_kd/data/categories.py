"""Category tables of the supported layout datasets: one table per dataset, the single source of
names, dataset ids and colours. Everything else (registration, the synthetic generator, PRImA
conversion, visualisation) reads from here.

Each entry: ``{"id": <id in the dataset's COCO json>, "name": str, "color": (R, G, B)}``.
Contiguous ids used by Detectron2 are the table order (0..K-1).
"""
from typing import Dict, List

# PubLayNet (Zhong et al., ICDAR 2019): categories 1..5 of its published train.json/val.json.
PUBLAYNET_CATEGORIES: List[Dict] = [
    {"id": 1, "name": "text", "color": (31, 119, 180)},
    {"id": 2, "name": "title", "color": (214, 39, 40)},
    {"id": 3, "name": "list", "color": (44, 160, 44)},
    {"id": 4, "name": "table", "color": (255, 127, 14)},
    {"id": 5, "name": "figure", "color": (148, 103, 189)},
]

# DocLayNet (Pfitzmann et al., KDD 2022): categories 1..11 of DocLayNet/COCO/{train,val,test}.json.
DOCLAYNET_CATEGORIES: List[Dict] = [
    {"id": 1, "name": "Caption", "color": (255, 127, 14)},
    {"id": 2, "name": "Footnote", "color": (140, 86, 75)},
    {"id": 3, "name": "Formula", "color": (188, 189, 34)},
    {"id": 4, "name": "List-item", "color": (44, 160, 44)},
    {"id": 5, "name": "Page-footer", "color": (127, 127, 127)},
    {"id": 6, "name": "Page-header", "color": (23, 190, 207)},
    {"id": 7, "name": "Picture", "color": (148, 103, 189)},
    {"id": 8, "name": "Section-header", "color": (227, 119, 194)},
    {"id": 9, "name": "Table", "color": (255, 187, 120)},
    {"id": 10, "name": "Text", "color": (31, 119, 180)},
    {"id": 11, "name": "Title", "color": (214, 39, 40)},
]

CATEGORY_TABLES: Dict[str, List[Dict]] = {
    "publaynet": PUBLAYNET_CATEGORIES,
    "doclaynet": DOCLAYNET_CATEGORIES,
}


def get_categories(style: str) -> List[Dict]:
    """Return the category table named ``style`` (e.g. "publaynet", "doclaynet")."""
    try:
        return CATEGORY_TABLES[style]
    except KeyError:
        raise KeyError(
            f"Unknown category table {style!r}; known: {sorted(CATEGORY_TABLES)}"
        ) from None


def metadata_from_categories(categories: List[Dict]) -> Dict:
    """Detectron2 ``MetadataCatalog`` fields for a category table."""
    return {
        "thing_classes": [c["name"] for c in categories],
        "thing_colors": [tuple(c["color"]) for c in categories],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }


# PRImA Layout Analysis Dataset (Antonacopoulos et al., ICDAR 2009), PAGE-XML regions mapped to the
# 6 classes of layout-parser's PRImA models (Layout-Parser/layout-model-training,
# tools/convert_prima_to_coco.py); which PAGE region goes where: dla_kd/data/prima.py.
PRIMA_CATEGORIES: List[Dict] = [
    {"id": 1, "name": "TextRegion", "color": (31, 119, 180)},
    {"id": 2, "name": "ImageRegion", "color": (148, 103, 189)},
    {"id": 3, "name": "TableRegion", "color": (255, 127, 14)},
    {"id": 4, "name": "MathsRegion", "color": (188, 189, 34)},
    {"id": 5, "name": "SeparatorRegion", "color": (127, 127, 127)},
    {"id": 6, "name": "OtherRegion", "color": (23, 190, 207)},
]
CATEGORY_TABLES["prima"] = PRIMA_CATEGORIES
