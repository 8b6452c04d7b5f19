#!/usr/bin/env python
"""CPU latency and file size of the deployable model as PyTorch, TorchScript and onnxruntime:

    python tools/benchmark_export.py --output out/bench [--config-file CFG] [--runs 10] \\
        [--short-side 800 --max-size 1333] [MODEL.WEIGHTS model.pth]

Default config: the tiny R-18-GN Mask R-CNN (configs/synthetic/mask_rcnn_R_18_GN_tiny_doclaynet.yaml);
random weights unless MODEL.WEIGHTS is given (latency does not depend on training, the number of
detections does: it is reported). The page (synthetic) is resized to --short-side/--max-size
(INPUT.MIN_SIZE_TEST/MAX_SIZE_TEST). Writes benchmark.json and benchmark.md (the table) to
--output, the benchmarked files to --output/models.
"""
import argparse
import os

import dla_kd  # noqa: F401  (registers datasets, backbones, meta-architectures)
from dla_kd.engine import load_config
from dla_kd.export.benchmark import benchmark, markdown_table, write_report
from dla_kd.utils.cli import run_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "synthetic", "mask_rcnn_R_18_GN_tiny_doclaynet.yaml")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--short-side", type=int, default=800, help="INPUT.MIN_SIZE_TEST")
    parser.add_argument("--max-size", type=int, default=1333, help="INPUT.MAX_SIZE_TEST")
    parser.add_argument("--runs", type=int, default=10, help="timed runs (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. MODEL.WEIGHTS")
    args = parser.parse_args(argv)
    opts = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", str(args.short_side),
            "INPUT.MAX_SIZE_TEST", str(args.max_size)] + list(args.opts)
    cfg = load_config(args.config_file, opts)
    report = benchmark(cfg, args.output, cfg.MODEL.WEIGHTS or None, args.runs, args.warmup, args.threads)
    paths = write_report(report, args.output)
    print(markdown_table(report))
    print(f"written: {paths['json']}, {paths['markdown']}")
    return 0


if __name__ == "__main__":
    run_tool(main)
