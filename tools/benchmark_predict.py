#!/usr/bin/env python
"""Wall time and peak memory (RSS) of predicting one large page, per output format:

    python tools/benchmark_predict.py --output out/bench_predict --page-size 10000x8000 \\
        [--detections 100] [--formats rle polygons boxes] [--no-vis] [--config-file CFG] [MODEL.WEIGHTS m.pth]

--page-size is HEIGHTxWIDTH in pixels. Default config: the tiny R-18-GN Mask R-CNN with random
weights, score threshold 0 so that it makes --detections detections (what memory and time grow
with). The page is written as a PNG and predicted as tools/predict.py does it (decode, forward,
masks pasted one detection at a time, JSON, PNG picture), in this process; the peak RSS is that
of the process, reset before each format (Linux). Writes benchmark_predict.json and
benchmark_predict.md to --output.
"""
import argparse
import os
import sys

import torch

import dla_kd  # noqa: F401  (registers datasets, backbones, meta-architectures)
from dla_kd.engine import load_config
from dla_kd.predict import OUTPUT_FORMATS
from dla_kd.predict.benchmark import benchmark_page, benchmark_predictor, markdown_table
from dla_kd.predict.visualize import DEFAULT_VIS_MAX_SIZE
from dla_kd.utils.files import atomic_write_json, atomic_write_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "synthetic", "mask_rcnn_R_18_GN_tiny_doclaynet.yaml")


def page_size(text: str):
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, e.g. 10000x8000, got {text!r}") from None
    return height, width


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--page-size", type=page_size, default=(10000, 8000), help="HEIGHTxWIDTH (default 10000x8000)")
    parser.add_argument("--detections", type=int, default=100, help="TEST.DETECTIONS_PER_IMAGE (default %(default)s)")
    parser.add_argument("--formats", nargs="+", choices=OUTPUT_FORMATS, default=list(OUTPUT_FORMATS))
    parser.add_argument("--no-vis", action="store_true", help="do not write the PNG picture")
    parser.add_argument("--vis-max-size", type=int, default=DEFAULT_VIS_MAX_SIZE,
                        help="longest side of the picture; 0: page size (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. MODEL.WEIGHTS")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config_file, ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                                         "TEST.DETECTIONS_PER_IMAGE", str(args.detections)] + list(args.opts))
    height, width = args.page_size
    report = benchmark_page(benchmark_predictor(cfg), height, width, args.output, args.formats, not args.no_vis,
                            args.vis_max_size)
    paths = {ext: os.path.join(args.output, f"benchmark_predict.{ext}") for ext in ("json", "md")}
    atomic_write_json(paths["json"], report, indent=2)
    atomic_write_text(paths["md"], markdown_table(report))
    print(markdown_table(report))
    print(f"written: {paths['json']}, {paths['md']}")
    return 0


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", message="torch.meshgrid")  # Detectron2's anchor generator
    sys.exit(main())
