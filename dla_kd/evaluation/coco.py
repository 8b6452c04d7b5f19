"""Detectron2's ``COCOEvaluator`` with the COCO conversion of a dataset kept to one evaluator."""
from typing import Optional

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm


class LayoutCOCOEvaluator(COCOEvaluator):
    """``COCOEvaluator`` (same arguments and results) whose COCO conversion of a dataset registered
    without a ``json_file`` (every dla-kd dataset: the loaders filter and convert the records) is
    its own: written to its ``output_dir`` (``<dataset>_coco_format.json``), afresh by the main
    process, and not left in the dataset's global metadata. ``coco_json``: the conversion of
    another evaluator of the same pages (its ``coco_json`` attribute) to score against instead,
    so that evaluators built together convert the dataset once.

    Detectron2's evaluator stores the path of its first conversion in ``MetadataCatalog`` for the
    rest of the process and reuses a cached conversion: a later evaluation in another folder then
    reads the first folder's file (a FileNotFoundError once that folder is removed), and a dataset
    changed on disk is scored against its old annotations. Only the main process scores (the other
    ranks gather their predictions to it), so the others keep Detectron2's cache: one conversion
    per evaluation (about 4 s for 5000 pages of 13 regions on one CPU core), not one per rank."""

    def __init__(self, dataset_name: str, *args, coco_json: Optional[str] = None, **kwargs):
        metadata = MetadataCatalog.get(dataset_name)
        converted = "json_file" not in metadata.as_dict()
        if converted and coco_json:
            metadata.json_file = coco_json
        elif converted:
            kwargs["allow_cached_coco"] = not comm.is_main_process()
        try:
            super().__init__(dataset_name, *args, **kwargs)
            self.coco_json = metadata.json_file
        finally:
            if converted and "json_file" in metadata.as_dict():
                delattr(metadata, "json_file")
