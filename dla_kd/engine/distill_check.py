"""A ``DISTILL`` section (or ``DATASETS.UNLABELED``) on a plain model: set but never used, so the
run would train a plain detector without a word (even with a teacher path that does not exist).
Refused unless ``DISTILL.ALLOW_UNUSED``."""
import logging
from typing import List

from detectron2.config import CfgNode

from ..config import add_distill_config, flatten_config

logger = logging.getLogger(__name__)

DISTILL_META_ARCHITECTURE = "DistillGeneralizedRCNN"


def changed_distill_keys(cfg: CfgNode) -> List[str]:
    """``DISTILL.*`` keys of ``cfg`` that differ from their defaults (``ALLOW_UNUSED`` aside), and
    ``DATASETS.UNLABELED`` when it names datasets (only distillation reads it)."""
    defaults = CfgNode()
    add_distill_config(defaults)
    default_values = dict(flatten_config(defaults.DISTILL, "DISTILL."))
    changed = [k for k, v in flatten_config(cfg.DISTILL, "DISTILL.") if default_values.get(k) != v]
    unlabeled = ["DATASETS.UNLABELED"] if cfg.DATASETS.get("UNLABELED") else []
    return [k for k in changed if k != "DISTILL.ALLOW_UNUSED"] + unlabeled


def check_distill_section(cfg: CfgNode) -> None:
    """Raise ``ValueError`` naming the keys when ``DISTILL.*`` is set on a config that does not
    distil (``MODEL.META_ARCHITECTURE`` is not ``DistillGeneralizedRCNN``); with
    ``DISTILL.ALLOW_UNUSED True`` log a warning instead."""
    if cfg.MODEL.META_ARCHITECTURE == DISTILL_META_ARCHITECTURE:
        return
    changed = changed_distill_keys(cfg)
    if not changed:
        return
    message = (
        f"DISTILL settings {changed[:6]}{' ...' if len(changed) > 6 else ''} are set but MODEL.META_ARCHITECTURE is "
        f"{cfg.MODEL.META_ARCHITECTURE}, not {DISTILL_META_ARCHITECTURE}: nothing would be distilled"
    )
    if not cfg.DISTILL.ALLOW_UNUSED:
        raise ValueError(
            f"{message}. Set MODEL.META_ARCHITECTURE {DISTILL_META_ARCHITECTURE} to distil, or "
            "DISTILL.ALLOW_UNUSED True to train the plain model anyway."
        )
    logger.warning(f"{message}; training the plain model (DISTILL.ALLOW_UNUSED)")
