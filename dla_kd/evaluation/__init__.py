"""COCO mAP evaluation helpers (Detectron2's COCOEvaluator does the evaluation itself)."""
from .coco import LayoutCOCOEvaluator
from .results import format_results_table, per_category_ap, save_eval_results

__all__ = ["LayoutCOCOEvaluator", "format_results_table", "per_category_ap", "save_eval_results"]
