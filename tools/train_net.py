#!/usr/bin/env python
"""Train or evaluate a layout detector, plain or distilled, exactly like Detectron2's launcher:

    python tools/train_net.py --config-file configs/... [--num-gpus N] [--resume] [KEY VALUE ...]
    python tools/train_net.py --config-file configs/... --eval-only MODEL.WEIGHTS path/to/model.pth

``--num-gpus`` is the number of processes per machine (gloo on CPU, NCCL on GPU);
``--num-machines``/``--machine-rank``/``--dist-url`` as in Detectron2, except that on one machine
the default ``--dist-url`` (a fixed port) becomes a free port, so runs side by side do not collide.

One run per OUTPUT_DIR: training holds ``OUTPUT_DIR/train.lock`` (``--eval-only``: ``eval.lock``)
while it runs; a second run there stops with a message naming the first (PID, host, since).

``--eval-only`` loads the weights strictly: missing or wrongly-shaped tensors are an error unless
``--allow-partial-weights`` (then the model is partly random, with a warning).
"""
import contextlib

from detectron2.engine import default_argument_parser, launch

import dla_kd  # noqa: F401  (registers datasets, backbones, meta-architectures)
from dla_kd.engine import Trainer, load_config, setup_run
from dla_kd.engine.eval_weights import ALLOW_PARTIAL_FLAG, load_eval_weights
from dla_kd.engine.launch import process_group_closed, resolve_dist_url
from dla_kd.engine.output_lock import OutputDirLock, OutputDirLockedError, lock_name


def setup(args):
    cfg = load_config(args.config_file, args.opts)
    setup_run(cfg, args)
    return cfg


def main(args):
    with process_group_closed():
        return run(args)


def run(args):
    cfg = setup(args)
    if args.eval_only:
        if not cfg.MODEL.WEIGHTS and not args.resume:
            raise SystemExit("--eval-only needs the checkpoint to evaluate: add MODEL.WEIGHTS path/to/model.pth")
        model = Trainer.build_model(cfg)
        load_eval_weights(cfg, model, resume=args.resume, allow_partial=args.allow_partial_weights)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def build_parser():
    parser = default_argument_parser()
    parser.add_argument(ALLOW_PARTIAL_FLAG, action="store_true",
                        help="--eval-only: evaluate even if the weights leave tensors missing or mis-shaped")
    return parser


def output_lock(args):
    """The lock of OUTPUT_DIR, taken in the launching process of machine rank 0 before any
    process writes there (other machines and ranks rely on it)."""
    output_dir = load_config(args.config_file, args.opts).OUTPUT_DIR
    if not output_dir or args.machine_rank != 0:
        return contextlib.nullcontext()
    try:
        return OutputDirLock(output_dir, lock_name(args.eval_only)).acquire()
    except OutputDirLockedError as e:
        raise SystemExit(f"error: {e}")


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
