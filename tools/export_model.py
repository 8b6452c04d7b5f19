#!/usr/bin/env python
"""Export the deployable detector (a plain model, or the student alone of a distillation
checkpoint: no teacher weights, SimKD's projector and reused heads included) by tracing:

    python tools/export_model.py --config-file CFG --format torchscript|onnx --output DIR \\
        [--sample-image PAGE.png ...] MODEL.WEIGHTS path/to/model_final.pth

KEY VALUE config overrides (incl. MODEL.WEIGHTS) go last. DIR receives ``model.ts`` or
``model.onnx``, ``student_config.yaml`` (the plain config) and ``export_info.json`` (input format,
normalisation, outputs and their meaning, classes, versions, file size, check result).

The exported graph takes one (3, h, w) float32 image in the config's INPUT.FORMAT, values 0-255,
already resized to the test size; it contains normalisation, padding, backbone, RPN + NMS, ROI
heads (score threshold, per-class NMS, top-k: fixed at export) and the mask head with its sigmoid.
It returns pred_boxes (N, 4) XYXY on the input, pred_classes, pred_masks (N, 1, M, M) mask
probabilities, scores and image_size. Left to the caller (as dla_kd.Predictor does): resizing the
page, scaling boxes back to the page, pasting masks (paste_masks_in_image) and thresholding them.

--format torchscript-script scripts instead of tracing (Detectron2's scripting_with_instances):
the file takes a batch of image dicts; Cascade R-CNN does not script (Detectron2 limitation,
reported as such). ONNX uses opset 16 by default: ROIAlignV2 needs it (lower opsets are refused).

By default the export is checked on the sample images (a synthetic page if none): PyTorch and the
exported file (TorchScript, or ONNX in onnxruntime) must give the same detections.

Exit status: 0 exported (and checked); 1 exported but the check failed (see export_info.json);
2 not exported (format cannot express the model, weights do not match the config, checkpoint
truncated or not a checkpoint, bad input).
"""
import argparse
import logging
import sys

import dla_kd  # noqa: F401  (registers datasets, backbones, meta-architectures)
from dla_kd.checkpoint import IncompleteCheckpointError, UnreadableCheckpointError
from dla_kd.engine import load_config
from dla_kd.export import FORMATS, ExportError, export_model
from dla_kd.export.check import BOX_TOL, SCORE_TOL
from dla_kd.export.cli import split_config_overrides
from dla_kd.export.onnx import DEFAULT_OPSET
from dla_kd.export.samples import UnreadableImageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="config the checkpoint was trained with (plain or distillation)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--sample-image", nargs="+", default=[], metavar="PATH", help="pages to trace and check on")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (>= 16 for ROIAlignV2)")
    parser.add_argument("--no-check", action="store_true", help="skip the comparison with PyTorch")
    parser.add_argument("--box-tol", type=float, default=BOX_TOL, help="check: box tolerance in pixels")
    parser.add_argument("--score-tol", type=float, default=SCORE_TOL, help="check: score tolerance")
    parser.add_argument("--dump-ir", action="store_true", help="torchscript: also write the code and IR")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, incl. MODEL.WEIGHTS")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.sample_image, args.opts = split_config_overrides(args.sample_image, args.opts)
    try:
        cfg = load_config(args.config_file, args.opts)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: config: {e}", file=sys.stderr)
        return 2
    if not cfg.MODEL.WEIGHTS:
        parser.error("give the checkpoint to export as MODEL.WEIGHTS path/to/model.pth")
    try:
        result = export_model(
            cfg, cfg.MODEL.WEIGHTS, args.format, args.output, args.sample_image, check=not args.no_check,
            opset=args.opset, dump_ir=args.dump_ir, config_file=args.config_file,
            box_tol=args.box_tol, score_tol=args.score_tol,
        )
    except (ExportError, IncompleteCheckpointError, UnreadableCheckpointError, FileNotFoundError,
            UnreadableImageError) as e:
        print(f"error: not exported: {e}", file=sys.stderr)
        return 2
    info = result.info
    print(f"exported {info['format']} ({info['file_size_bytes'] / 1e6:.1f} MB, "
          f"{info['student']['parameters'] / 1e6:.2f} M parameters): {result.model_file}")
    print(f"config: {result.config_file}\ninfo:   {result.info_file}")
    if result.check_passed is None:
        print("check: skipped")
        return 0
    for page, c in zip(info["check"]["pages"], result.comparisons):
        print(f"check {'ok  ' if page['ok'] else 'FAIL'} {page['source']}: {c.describe()}")
    if not result.check_passed:
        print("error: the exported model does not reproduce the PyTorch detections", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    import warnings

    from detectron2.utils.logger import setup_logger

    warnings.filterwarnings("ignore", message="torch.meshgrid")  # Detectron2's anchor generator

    setup_logger(name="dla_kd", abbrev_name="dla_kd")
    logging.getLogger("dla_kd").setLevel(logging.WARNING)
    sys.exit(main())
