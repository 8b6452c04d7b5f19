"""The run setup of ``tools/train_net.py``; ``load_config`` (defined in ``dla_kd.config``) is
re-exported here for code that imports it from ``dla_kd.engine``."""
import os

import torch
from detectron2.config import CfgNode
try:
    from detectron2.engine.defaults import _highlight  # colours in the console, as default_setup does
except ImportError:  # another Detectron2 build
    def _highlight(code, filename):
        return code
from detectron2.utils import comm
from detectron2.utils.collect_env import collect_env_info
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from ..config import load_config  # noqa: F401  (re-export: dla_kd.engine.load_config)
from . import run_record


def setup_run(cfg: CfgNode, args) -> None:
    """Detectron2's ``default_setup`` (its loggers, seeds, environment info), plus the ``dla_kd``
    logger, so that dla-kd's messages (dataset loading and validation, e.g. the count of excluded
    redundant annotations, and every warning) reach the console and ``OUTPUT_DIR/log.txt``
    (``log.txt.rank<N>`` on other ranks) like Detectron2's. The config is recorded as
    ``run_record.py`` says (``config.yaml`` of the first start, ``config_resume_<k>.yaml`` per
    resume, never overwritten; atomic) instead of Detectron2's in-place ``config.yaml``."""
    output_dir, rank = cfg.OUTPUT_DIR, comm.get_rank()
    if comm.is_main_process() and output_dir:
        os.makedirs(output_dir, exist_ok=True)
    setup_logger(output_dir, distributed_rank=rank, name="fvcore")
    logger = setup_logger(output_dir, distributed_rank=rank)
    setup_logger(output_dir, distributed_rank=rank, name="dla_kd", abbrev_name="dla_kd")
    logger.info(f"Rank of current process: {rank}. World size: {comm.get_world_size()}")
    logger.info("Environment info:\n" + collect_env_info())
    logger.info("Command line arguments: " + str(args))
    if getattr(args, "config_file", ""):
        with open(args.config_file) as f:
            logger.info(f"Contents of args.config_file={args.config_file}:\n{_highlight(f.read(), args.config_file)}")
    if comm.is_main_process() and output_dir:
        eval_only = getattr(args, "eval_only", False)
        path = run_record.record_path(cfg, getattr(args, "resume", False), eval_only, _eval_weights_stem(cfg, args))
        logger.info(f"Running with full config:\n{_highlight(cfg.dump(), '.yaml')}")
        run_record.write_record(cfg, path)
        logger.info(f"Full config saved to {path}")
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
    if not getattr(args, "eval_only", False):
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK


def _eval_weights_stem(cfg: CfgNode, args) -> str:
    """The stem of the weights an ``--eval-only`` evaluates (``--resume``: the last checkpoint)."""
    from .eval_outputs import weights_stem

    tag = os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")
    if getattr(args, "resume", False) and os.path.isfile(tag):
        with open(tag) as f:
            name = f.read().strip()
        if name:
            return weights_stem(name)
    return weights_stem(cfg.MODEL.WEIGHTS or "weights")
