#!/usr/bin/env python
"""Detect the layout of images, folders and PDFs, from a checkpoint or an exported model:

    python tools/predict.py --config-file CFG --input a.png scans/ doc.pdf --output out/ \\
        MODEL.WEIGHTS path/to/model_final.pth          # plain or distillation checkpoint
    python tools/predict.py --exported export/model.onnx --input doc.pdf --output out/
                                                       # or model.ts; export_info.json next to it

KEY VALUE config overrides (incl. MODEL.WEIGHTS) go last. Folders: their images and PDFs (not
recursive). PDF pages are rendered at --dpi. For every page, ``out/<name>.json`` (COCO-style:
page size, per detection dataset category id and name, bbox XYWH, score, segmentation as polygons
or RLE; the same schema for every backend, see dla_kd/predict/records.py) and ``out/<name>.png``
(boxes and masks coloured by category). ``out/summary.json`` lists pages written and failures.

A file that cannot be read (unreadable image, corrupt PDF, PDF without pages, missing path) is
reported with the reason and the other files are still processed. At the end, failures are listed.

Exit status: 0 all pages written; 1 some files or pages failed (listed at the end);
2 nothing run (the model could not be loaded, e.g. weights not matching the config).
"""
import argparse
import logging
import sys

import dla_kd  # noqa: F401  (registers datasets, backbones, meta-architectures)
from dla_kd import Predictor
from dla_kd.export.cli import split_config_overrides
from dla_kd.predict import MASK_FORMATS
from dla_kd.predict.batch import DEFAULT_DPI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--config-file", help="config of the checkpoint (plain or distillation); weights as MODEL.WEIGHTS")
    model.add_argument("--exported", metavar="PATH", help="exported model.ts / model.onnx (or its folder)")
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH", help="images, folders, PDFs")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--dpi", type=float, default=DEFAULT_DPI, help="PDF render resolution (default %(default)s)")
    parser.add_argument("--mask-format", choices=MASK_FORMATS, default="polygon", help="segmentation in the JSON")
    parser.add_argument("--min-score", type=float, default=None, help="drop detections below this score")
    parser.add_argument("--no-vis", action="store_true", help="do not write PNG pictures")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides, incl. MODEL.WEIGHTS")
    return parser


def load_predictor(args) -> Predictor:
    if args.exported:
        return Predictor.from_exported(args.exported, args.threads, min_score=args.min_score)
    return Predictor.from_checkpoint(args.config_file, opts=args.opts, min_score=args.min_score)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.input, args.opts = split_config_overrides(args.input, args.opts)
    if not args.input:
        parser.error("--input needs at least one image, folder or PDF")
    if args.exported and args.opts:
        parser.error("config overrides apply to --config-file checkpoints, not to --exported models")
    try:
        predictor = load_predictor(args)
    except Exception as e:  # config, checkpoint or export info: nothing can run, say why
        print(f"error: cannot load the model: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    summary = predictor.predict_files(args.input, args.output, dpi=args.dpi, mask_format=args.mask_format,
                                      visualize=not args.no_vis, progress=not args.no_progress)
    print(f"{len(summary.written)} pages written to {args.output} ({predictor.backend})")
    if summary.failures:
        print(f"{len(summary.failures)} failed:", file=sys.stderr)
        for failure in summary.failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    import warnings

    from detectron2.utils.logger import setup_logger

    warnings.filterwarnings("ignore", message="torch.meshgrid")  # Detectron2's anchor generator

    setup_logger(name="dla_kd", abbrev_name="dla_kd")
    logging.getLogger("dla_kd").setLevel(logging.WARNING)
    sys.exit(main())
