"""Dataset keys dla-kd adds to Detectron2's ``DATASETS`` section."""


def add_datasets_config(cfg) -> None:
    """``DATASETS.UNLABELED``: names of registered datasets whose pages train a distillation
    student *without* their annotations (any annotations they have are dropped), mixed into
    every training batch at ``DISTILL.UNLABELED.RATIO``. Typically pages registered with
    ``dla_kd.data.register_unlabeled_pages`` (folders of images and PDFs) or the built-in
    ``synthetic_{doclaynet,publaynet}_unlabeled``. Only ``DistillGeneralizedRCNN`` uses them: set
    on a plain model, training stops (as for ``DISTILL.*``). Empty: labelled pages only."""
    cfg.DATASETS.UNLABELED = ()
