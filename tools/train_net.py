#!/usr/bin/env python
"""Train or evaluate a layout detector, plain or distilled, exactly like Detectron2's launcher:

    python tools/train_net.py --config-file configs/... [--num-gpus N] [--resume] [KEY VALUE ...]
    python tools/train_net.py --config-file configs/... --eval-only MODEL.WEIGHTS path/to/model.pth

``--num-gpus`` is the number of processes per machine (gloo on CPU, NCCL on GPU);
``--num-machines``/``--machine-rank``/``--dist-url`` as in Detectron2, except that on one machine
the default ``--dist-url`` (a fixed port) becomes a free port, so runs side by side do not collide.

One run per OUTPUT_DIR: training holds ``OUTPUT_DIR/train.lock`` (``--eval-only``: ``eval.lock``)
while any of its processes runs; a second run there stops with a message naming the first (PID,
host, since). Workers stop when their launcher dies (``dla_kd/engine/launch.py``).

``--resume`` compares the config with the run's recorded one: changes of what is trained (model,
DISTILL, data, input) are refused unless ``--allow-config-change``; solver changes apply; every
invocation's config is kept (``dla_kd/engine/run_record.py``); metrics.json rows past the
resumed checkpoint move to ``metrics_discarded_<k>.json`` (``dla_kd/engine/run_metrics.py``).

``--eval-only`` loads the weights strictly: missing or wrongly-shaped tensors are an error unless
``--allow-partial-weights`` (then the model is partly random, with a warning). Its results never
replace another checkpoint's (``dla_kd/engine/eval_outputs.py``).

See docs/robust_runs.md.
"""
import contextlib
import logging
import os

from detectron2.engine import default_argument_parser, launch

import dla_kd  # noqa: F401  (registers datasets, backbones, meta-architectures)
from dla_kd.engine import Trainer, load_config, setup_run
from dla_kd.engine.eval_weights import ALLOW_PARTIAL_FLAG, load_eval_weights
from dla_kd.engine.launch import (
    LAUNCHER_PID_ENV, launcher_pid, process_group_closed, resolve_dist_url, stop_with_launcher,
)
from dla_kd.engine.optimizer import check_lr_steps
from dla_kd.engine.output_lock import (
    LOCK_PATH_ENV, OutputDirLock, OutputDirLockedError, RunLockLostError, join_run_lock, lock_name,
)
from dla_kd.engine.run_record import ALLOW_CHANGE_FLAG, ConfigChangeError, check_resume_config


def setup(args):
    cfg = load_config(args.config_file, args.opts)
    changes = check_config(cfg, args)
    setup_run(cfg, args)
    if changes:
        listing = "\n  ".join(f"[{c.kind}] {c}" for c in changes)
        logging.getLogger("dla_kd").warning(f"--resume with a config that differs from the run's record:\n  {listing}")
    return cfg


def check_config(cfg, args):
    """Checks made before anything is written: the LR steps, and on --resume the config against
    the run's record (refused: SystemExit naming every difference). Returns the differences."""
    try:
        if not args.eval_only:
            check_lr_steps(cfg)
        if args.resume and not args.eval_only and cfg.OUTPUT_DIR:
            return check_resume_config(cfg, allow_change=args.allow_config_change)
    except (ConfigChangeError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    return []


def main(args):
    parent = launcher_pid()
    if parent is not None:  # a spawned worker: stop with the launcher, hold the run's lock with it
        stop_with_launcher(parent)
        try:
            join_run_lock(launcher_pid=parent)
        except RunLockLostError as e:
            raise SystemExit(f"error: {e}")
    with process_group_closed():
        return run(args)


def run(args):
    cfg = setup(args)
    if args.eval_only:
        if not cfg.MODEL.WEIGHTS and not args.resume:
            raise SystemExit("--eval-only needs the checkpoint to evaluate: add MODEL.WEIGHTS path/to/model.pth")
        model = Trainer.build_model(cfg)
        weights = load_eval_weights(cfg, model, resume=args.resume, allow_partial=args.allow_partial_weights)
        return Trainer.test(cfg, model, weights_file=weights)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def build_parser():
    parser = default_argument_parser()
    parser.add_argument(ALLOW_PARTIAL_FLAG, action="store_true",
                        help="--eval-only: evaluate even if the weights leave tensors missing or mis-shaped")
    parser.add_argument(ALLOW_CHANGE_FLAG, action="store_true",
                        help="--resume: accept a config that changes what the run trains (model, DISTILL, data, input)")
    return parser


def output_lock(args):
    """The lock of OUTPUT_DIR, taken in the launching process of machine rank 0 before any
    process writes there (other machines and ranks rely on it); its workers join it
    (``$DLA_KD_RUN_LOCK``). Then the config is checked (before any worker starts)."""
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    os.environ.pop(LOCK_PATH_ENV, None)  # a value inherited from another run is not ours
    cfg = load_config(args.config_file, args.opts)
    if not cfg.OUTPUT_DIR or args.machine_rank != 0:
        return contextlib.nullcontext()
    try:
        lock = OutputDirLock(cfg.OUTPUT_DIR, lock_name(args.eval_only)).acquire()
    except OutputDirLockedError as e:
        raise SystemExit(f"error: {e}")
    try:
        check_config(cfg, args)
    except SystemExit:
        lock.release()
        raise
    os.environ[LOCK_PATH_ENV] = lock.path
    return lock


if __name__ == "__main__":
    parser = build_parser()
    args = parser.parse_args()
    args.dist_url = resolve_dist_url(args.dist_url, args.num_machines, parser.get_default("dist_url"))
    print("Command Line Args:", args)
    with output_lock(args):
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
