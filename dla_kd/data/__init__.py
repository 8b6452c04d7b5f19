"""Layout datasets: category tables, validated COCO loading, registration, synthetic pages,
unlabeled pages of your own (images, PDFs), pseudo-labelled pages, the mixed train loader."""
from .builtin import (
    datasets_root,
    register_all,
    register_layout_coco,
    register_pseudo_labeled,
    register_synthetic,
    register_synthetic_unlabeled,
    register_unlabeled_pages,
)
from .categories import CATEGORY_TABLES, DOCLAYNET_CATEGORIES, PUBLAYNET_CATEGORIES, get_categories
from .coco_layout import CorruptAnnotationError, DatasetNotFoundError, load_layout_coco_json
from .pseudo_labeled import PseudoLabelMismatchError

register_all()
