"""Dataset keys dla-kd adds to Detectron2's ``DATASETS`` section."""


def add_datasets_config(cfg) -> None:
    """``DATASETS.UNLABELED``: names of registered datasets whose pages train a distillation
    student *without* their annotations (any annotations they have are dropped), mixed into
    every training batch at ``DISTILL.UNLABELED.RATIO``. Typically pages registered with
    ``dla_kd.data.register_unlabeled_pages`` (folders of images and PDFs) or the built-in
    ``synthetic_{doclaynet,publaynet}_unlabeled``. Only ``DistillGeneralizedRCNN`` uses them: set
    on a plain model, training stops (as for ``DISTILL.*``). Empty: labelled pages only."""
    cfg.DATASETS.UNLABELED = ()
    # Most instances one training page may have (0: no limit). Each instance is a ground-truth box
    # the RPN and ROI heads match every anchor and proposal against (memory grows with anchors x
    # instances): a page with 10^6 tiny boxes (a broken export) asked for about 10 GB. Real layout
    # pages have tens to a few hundred regions (DocLayNet: at most a few hundred). A page above it
    # stops training before the first step with the page's file and image id
    # (``dla_kd/data/page_checks.py``); raise it for datasets of word- or character-level boxes.
    cfg.DATASETS.MAX_INSTANCES_PER_PAGE = 2000
