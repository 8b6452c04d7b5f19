"""The run setup of ``tools/train_net.py``; ``load_config`` (defined in ``dla_kd.config``) is
re-exported here for code that imports it from ``dla_kd.engine``."""
from detectron2.config import CfgNode
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import load_config  # noqa: F401  (re-export: dla_kd.engine.load_config)


def setup_run(cfg: CfgNode, args) -> None:
    """Detectron2's ``default_setup`` (its loggers, ``config.yaml``, seeds, environment info) plus
    the ``dla_kd`` logger, so that dla-kd's messages (dataset loading and validation, e.g. the
    count of excluded redundant annotations, and every warning) reach the console and
    ``OUTPUT_DIR/log.txt`` (``log.txt.rank<N>`` on other ranks) like Detectron2's."""
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="dla_kd", abbrev_name="dla_kd")
