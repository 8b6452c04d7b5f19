#!/usr/bin/env python
"""Extract the distilled student alone from a distillation checkpoint:

    python tools/extract_student.py --config-file configs/.../distill/<method>.yaml \\
        --output out/student MODEL.WEIGHTS output/.../model_final.pth

writes ``out/student/model_student.pth`` (student tensors only: no teacher weights, no
distillation adapters; SimKD students keep their projector and reused heads) and
``out/student/student_config.yaml``, a plain Detectron2 config to train_net/export/predict with.
"""
import argparse

import dla_kd  # noqa: F401
from dla_kd.engine import load_config
from dla_kd.export import extract_student


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the distillation config the checkpoint was trained with")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, incl. MODEL.WEIGHTS")
    args = parser.parse_args()
    cfg = load_config(args.config_file, args.opts)
    if not cfg.MODEL.WEIGHTS:
        parser.error("give the distillation checkpoint as MODEL.WEIGHTS path/to/model_final.pth")
    config_path, weights_path = extract_student(cfg, cfg.MODEL.WEIGHTS, args.output)
    print(f"student weights: {weights_path}\nstudent config:  {config_path}")


if __name__ == "__main__":
    from detectron2.utils.logger import setup_logger

    setup_logger(name="dla_kd")
    main()
