#!/usr/bin/env python
"""Published DiT/BEiT checkpoint -> Detectron2-format ``.pth`` for dla-kd's ViT backbone.

    python tools/convert_dit_to_d2.py dit-base-224-p16-500k-62d53a.pth dit-base-d2.pth \
        [--config-file configs/publaynet/mask_rcnn_DiT_B_FPN.yaml [--opts KEY VALUE ...]]

Takes pre-training files (unilm ``dit-{base,large}-224-p16-500k-*.pth``, BEiT) and unilm's DiT
layout-detection checkpoints. Name mapping: ``dla_kd/checkpoint/converters.py`` (the same code
``DLACheckpointer`` runs, so converting first is optional). With ``--config-file`` the model is
built and the checkpoint's shapes adapted to it; missing/unexpected keys are printed either way.
"""

import argparse
import sys

import torch

import dla_kd  # noqa: F401  (registers the backbones)
from dla_kd.checkpoint.converters import convert_beit_state_dict, log_report


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="DiT/BEiT checkpoint (.pth)")
    parser.add_argument("output", help="Detectron2-format checkpoint to write (.pth)")
    parser.add_argument("--config-file", default="", help="build this model to adapt shapes and check keys")
    parser.add_argument("--opts", nargs="*", default=[], help="config overrides KEY VALUE ... (with --config-file)")
    return parser.parse_args(argv)


def _model_state(config_file: str, opts):
    from detectron2.modeling import build_model

    from dla_kd.engine import load_config

    cfg = load_config(config_file, list(opts) + ["MODEL.DEVICE", "cpu"])
    return build_model(cfg).state_dict()


def main(argv=None) -> int:
    args = parse_args(argv)
    checkpoint = torch.load(args.input, map_location="cpu")
    model_state = _model_state(args.config_file, args.opts) if args.config_file else None
    state, report = convert_beit_state_dict(checkpoint, model_state)
    log_report(report, log=print)
    if model_state is not None:
        unexpected = sorted(k for k in state if k not in model_state)
        print(f"Unexpected for the model (not loaded): {unexpected}" if unexpected else "Every key fits the model")
    torch.save(
        {"model": state, "__author__": "dla-kd tools/convert_dit_to_d2.py", "matching_heuristics": False}, args.output
    )
    print(f"Wrote {len(state)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
