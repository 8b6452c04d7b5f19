"""Building a config from a file and command-line overrides: shared by every tool and by the
teacher of a distillation config (``modeling.meta_arch.teacher``)."""
import os
from typing import Sequence

from detectron2.config import CfgNode


def load_config(config_file: str, opts: Sequence[str] = (), freeze: bool = True) -> CfgNode:
    """Detectron2 defaults + dla-kd keys, then ``config_file`` (``_BASE_`` chains resolved), then
    ``opts`` (``["KEY", "VALUE", ...]``). Unknown keys raise ``KeyError`` naming the key."""
    from . import get_dla_kd_cfg

    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"Config file {config_file} not found")
    cfg = get_dla_kd_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if freeze:
        cfg.freeze()
    return cfg
