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

The model is built, traced and checked on the CPU whatever MODEL.DEVICE says (a traced graph
records its device): a GPU machine writes the same file as a CPU machine; student_config.yaml keeps
the config's MODEL.DEVICE.

By default the export is checked on the sample images (a synthetic page if none): PyTorch and the
exported file (TorchScript, or ONNX in onnxruntime) must give the same detections.

Test-time budget (what a page costs): --budget fast|accurate and the KEY VALUE overrides of
MODEL.RPN.POST_NMS_TOPK_TEST, MODEL.ROI_HEADS.SCORE_THRESH_TEST, TEST.DETECTIONS_PER_IMAGE (traced
into the graph) and INPUT.MIN_SIZE_TEST/MAX_SIZE_TEST (the size every predictor of the export
resizes pages to); recorded under "budget" in export_info.json.

int8 (--format onnx --quantize int8 --calibration DATASET|FOLDER): onnxruntime static quantization
(QDQ) of the feature convolutions and linear layers, calibrated on --calibration-images pages;
prediction layers, box decoding, NMS and RoIAlign stay float. DIR receives model.onnx (float) and
model.int8.onnx (what export_info.json describes). The check then compares the COCO bbox AP of
both on --check-images pages of --check-dataset (a registered dataset with annotations); no
--check-dataset: export_info.json says AP was not checked.

Exit status: 0 exported (and checked); 1 exported but the check failed (detections differ from
PyTorch, or the int8 AP is more than --max-ap-drop below the float AP; see export_info.json);
2 not exported (format cannot express the model, weights do not match the config, checkpoint
truncated or not a checkpoint, bad input, unknown calibration or check dataset).
"""
import argparse
import sys
from typing import Optional

import dla_kd  # noqa: F401  (registers datasets, backbones, meta-architectures)
from dla_kd.checkpoint import IncompleteCheckpointError, UnreadableCheckpointError
from dla_kd.engine import load_config
from dla_kd.export import FORMATS, ExportError, export_model
from dla_kd.export.ap_check import DEFAULT_CHECK_IMAGES, DEFAULT_MAX_AP_DROP, APCheck, saturation_hint
from dla_kd.inference.budget import BUDGETS, Budget, split_budget_overrides
from dla_kd.export.calibration import DEFAULT_CALIBRATION_IMAGES
from dla_kd.export.check import BOX_TOL, SCORE_TOL
from dla_kd.utils.cli import split_config_overrides
from dla_kd.export.exporter import Int8Options
from dla_kd.export.onnx import DEFAULT_OPSET
from dla_kd.inference.samples import UnreadableImageError
from dla_kd.utils.cli import run_tool


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="config the checkpoint was trained with (plain or distillation)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--sample-image", nargs="+", default=[], metavar="PATH", help="pages to trace and check on")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (>= 16 for ROIAlignV2)")
    parser.add_argument("--no-check", action="store_true", help="skip the checks (PyTorch comparison, int8 AP)")
    parser.add_argument("--box-tol", type=float, default=BOX_TOL, help="check: box tolerance in pixels")
    parser.add_argument("--score-tol", type=float, default=SCORE_TOL, help="check: score tolerance")
    parser.add_argument("--dump-ir", action="store_true", help="torchscript: also write the code and IR")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="accurate",
                        help="test-time budget preset (fast: <= 300 proposals, <= 50 detections; accurate: the config's)")
    int8 = parser.add_argument_group("int8 (ONNX)")
    int8.add_argument("--quantize", choices=["int8"], default=None, help="also write model.int8.onnx")
    int8.add_argument("--calibration", metavar="DATASET|FOLDER", help="registered dataset or folder of pages")
    int8.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES, metavar="N")
    int8.add_argument("--reduce-range", action="store_true",
                      help="7-bit weights (onnxruntime's remedy for u8s8 saturation on AVX2 CPUs without VNNI)")
    int8.add_argument("--check-dataset", metavar="NAME", help="registered dataset with annotations for the AP check")
    int8.add_argument("--check-images", type=int, default=DEFAULT_CHECK_IMAGES, metavar="N")
    int8.add_argument("--max-ap-drop", type=float, default=DEFAULT_MAX_AP_DROP,
                      help="check: largest allowed bbox AP drop of int8 vs float, AP points (default %(default)s)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, incl. MODEL.WEIGHTS")
    return parser


def int8_options(parser: argparse.ArgumentParser, args) -> Optional[Int8Options]:
    """The int8 options of the command line (None without --quantize); misuse is a usage error."""
    if args.quantize is None:
        if args.calibration or args.check_dataset:
            parser.error("--calibration and --check-dataset go with --quantize int8")
        return None
    if args.format != "onnx":
        parser.error("--quantize int8 needs --format onnx (onnxruntime quantization)")
    if not args.calibration:
        parser.error("--quantize int8 needs --calibration DATASET|FOLDER (pages to calibrate the int8 ranges on)")
    check = APCheck(args.check_dataset, args.check_images, args.max_ap_drop) if args.check_dataset else None
    return Int8Options(args.calibration, args.calibration_images, reduce_range=args.reduce_range, check=check)


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
    int8 = int8_options(parser, args)
    try:
        result = export_model(
            cfg, cfg.MODEL.WEIGHTS, args.format, args.output, args.sample_image, check=not args.no_check,
            opset=args.opset, dump_ir=args.dump_ir, config_file=args.config_file,
            box_tol=args.box_tol, score_tol=args.score_tol,
            budget=Budget(args.budget, split_budget_overrides(args.opts)[0]), int8=int8,
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
    if not info["check"]["passed"]:
        print("error: the exported model does not reproduce the PyTorch detections", file=sys.stderr)
        return 1
    ap = info.get("int8_check", {})
    if ap.get("checked"):
        print(f"int8 check {'ok  ' if ap['passed'] else 'FAIL'} {ap['dataset']} ({ap['images']} pages): bbox AP "
              f"{ap['int8_ap']:.2f} int8 vs {ap['float_ap']:.2f} float ({ap['ap_delta']:+.2f}, allowed drop {ap['max_ap_drop']})")
        if not ap["passed"]:
            print("error: the int8 model loses more AP than --max-ap-drop", file=sys.stderr)
            hint = saturation_hint(info.get("quantization", {}))
            if hint:
                print(f"hint: {hint}", file=sys.stderr)
            return 1
    elif ap:
        print(f"int8 check: {ap['reason']}")
    return 0


if __name__ == "__main__":
    run_tool(main, quiet=True)
