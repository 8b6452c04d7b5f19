#!/usr/bin/env python
"""Train or evaluate a layout detector, plain or distilled, exactly like Detectron2's launcher:

    python tools/train_net.py --config-file configs/... [--num-gpus N] [--resume] [KEY VALUE ...]
    python tools/train_net.py --config-file configs/... --eval-only MODEL.WEIGHTS path/to/model.pth

``--num-gpus`` is the number of processes per machine (gloo on CPU, NCCL on GPU);
``--num-machines``/``--machine-rank``/``--dist-url`` as in Detectron2.
"""
from detectron2.engine import default_argument_parser, default_setup, launch

import dla_kd  # noqa: F401  (registers datasets, backbones, meta-architectures)
from dla_kd.checkpoint import DLACheckpointer
from dla_kd.engine import Trainer, load_config


def setup(args):
    cfg = load_config(args.config_file, args.opts)
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        if not cfg.MODEL.WEIGHTS and not args.resume:
            raise SystemExit("--eval-only needs the checkpoint to evaluate: add MODEL.WEIGHTS path/to/model.pth")
        model = Trainer.build_model(cfg)
        DLACheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
