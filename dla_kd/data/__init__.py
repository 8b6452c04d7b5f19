"""Layout datasets: category tables, validated COCO loading, registration, synthetic pages."""
from .builtin import datasets_root, register_all, register_layout_coco, register_synthetic
from .categories import CATEGORY_TABLES, DOCLAYNET_CATEGORIES, PUBLAYNET_CATEGORIES, get_categories
from .coco_layout import CorruptAnnotationError, DatasetNotFoundError, load_layout_coco_json

register_all()
