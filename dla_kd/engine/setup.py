"""Building a config from a file and command-line overrides, shared by every tool, and the
run setup of ``tools/train_net.py``."""
import os
from typing import Sequence

from detectron2.config import CfgNode
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import get_dla_kd_cfg


def load_config(config_file: str, opts: Sequence[str] = (), freeze: bool = True) -> CfgNode:
    """Detectron2 defaults + dla-kd keys, then ``config_file`` (``_BASE_`` chains resolved), then
    ``opts`` (``["KEY", "VALUE", ...]``). Unknown keys raise ``KeyError`` naming the key."""
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"Config file {config_file} not found")
    cfg = get_dla_kd_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if freeze:
        cfg.freeze()
    return cfg


def setup_run(cfg: CfgNode, args) -> None:
    """Detectron2's ``default_setup`` (its loggers, ``config.yaml``, seeds, environment info) plus
    the ``dla_kd`` logger, so that dla-kd's messages (dataset loading and validation, e.g. the
    count of excluded redundant annotations, and every warning) reach the console and
    ``OUTPUT_DIR/log.txt`` (``log.txt.rank<N>`` on other ranks) like Detectron2's."""
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="dla_kd", abbrev_name="dla_kd")
