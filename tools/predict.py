#!/usr/bin/env python
"""Detect the layout of images, folders and PDFs, from a checkpoint or an exported model:

    python tools/predict.py --config-file CFG --input a.png scans/ doc.pdf --output out/ \\
        MODEL.WEIGHTS path/to/model_final.pth          # plain or distillation checkpoint
    python tools/predict.py --exported export/model.onnx --input doc.pdf --output out/
                                   # or model.ts / model.int8.onnx (or the folder); export_info.json next to it

KEY VALUE config overrides (incl. MODEL.WEIGHTS) go last. --budget fast|accurate and overrides of
MODEL.RPN.POST_NMS_TOPK_TEST, MODEL.ROI_HEADS.SCORE_THRESH_TEST, TEST.DETECTIONS_PER_IMAGE,
INPUT.MIN_SIZE_TEST/MAX_SIZE_TEST set the test-time budget of a checkpoint (also of a distillation
student); an exported model keeps the budget and test size of its export (export_info.json).

Folders: their images and PDFs (not recursive). PDF pages are rendered at --dpi, in --workers
processes while the model runs. For every page, ``out/<name>.json`` (COCO-style: page size, per
detection dataset category id and name, bbox XYWH, score, segmentation as --output-format; the
same schema for every backend, see dla_kd/predict/records.py) and ``out/<name>.png`` (boxes and
masks coloured by category). ``out/summary.json`` lists pages written and failures, the time
taken and pages/s.

--output-format: ``rle`` (default; COCO compressed RLE, pycocotools decodes it), ``polygons``
(every contour point: large), ``boxes`` (no masks, no mask pasting: the fastest).
--batch-size pages share a forward with a checkpoint (PyTorch; pages of the same size);
exported TorchScript/ONNX graphs take one image, so their pages are run one at a time.

A file that cannot be read (unreadable image, corrupt PDF, PDF without pages, missing path) is
reported with the reason and the other files are still processed. At the end, failures are listed.

Exit status: 0 all pages written; 1 some files or pages failed (listed at the end);
2 nothing run (the model could not be loaded, e.g. weights not matching the config).
"""
import argparse
import sys

import dla_kd  # noqa: F401  (registers datasets, backbones, meta-architectures)
from dla_kd import Predictor
from dla_kd.inference.budget import BUDGETS, Budget, split_budget_overrides
from dla_kd.predict import OUTPUT_FORMATS
from dla_kd.predict.batch import DEFAULT_BATCH_SIZE, DEFAULT_WORKERS
from dla_kd.predict.cli import add_model_and_pages_arguments, parse_model_and_pages
from dla_kd.predict.records import DEFAULT_OUTPUT_FORMAT
from dla_kd.predict.visualize import DEFAULT_VIS_MAX_SIZE
from dla_kd.utils.cli import run_tool


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_and_pages_arguments(parser, "config of the checkpoint (plain or distillation); weights as MODEL.WEIGHTS",
                                  "output folder")
    parser.add_argument("--output-format", choices=OUTPUT_FORMATS, default=DEFAULT_OUTPUT_FORMAT,
                        help="segmentation in the JSON: rle, polygons or none (boxes) (default %(default)s)")
    parser.add_argument("--vis-max-size", type=int, default=DEFAULT_VIS_MAX_SIZE,
                        help="pictures of larger pages are scaled down to this longest side; 0: page size "
                             "(default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="pages per forward, checkpoints only (default %(default)s)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help="processes loading/rendering pages ahead; 0: none (default %(default)s)")
    parser.add_argument("--min-score", type=float, default=None, help="drop detections below this score")
    parser.add_argument("--no-vis", action="store_true", help="do not write PNG pictures")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default=None,
                        help="checkpoints: test-time budget preset (fast: <= 300 proposals, <= 50 detections)")
    return parser


def load_predictor(args) -> Predictor:
    if args.exported:
        return Predictor.from_exported(args.exported, args.threads, min_score=args.min_score)
    budget = Budget(args.budget or "accurate", split_budget_overrides(args.opts)[0])
    return Predictor.from_checkpoint(args.config_file, opts=args.opts, budget=budget, num_threads=args.threads,
                                     min_score=args.min_score)


def main(argv=None) -> int:
    args = parse_model_and_pages(build_parser(), argv, checkpoint_only=("budget",),
                                 exported_hint="an export keeps the budget it was exported with (export again "
                                               "with --budget / KEY VALUE)")
    try:
        predictor = load_predictor(args)
    except Exception as e:  # config, checkpoint or export info: nothing can run, say why
        print(f"error: cannot load the model: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    summary = predictor.predict_files(args.input, args.output, dpi=args.dpi, output_format=args.output_format,
                                      visualize=not args.no_vis, progress=not args.no_progress,
                                      batch_size=args.batch_size, workers=args.workers,
                                      vis_max_size=args.vis_max_size)
    per_forward = f"up to {args.batch_size} pages per forward" if predictor.batch_forward else "one page per forward"
    print(f"{len(summary.written)} pages written to {args.output} ({predictor.backend}, {per_forward}) in "
          f"{summary.seconds:.1f} s: {summary.pages_per_second:.2f} pages/s")
    if summary.failures:
        print(f"{len(summary.failures)} failed:", file=sys.stderr)
        for failure in summary.failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_tool(main, quiet=True)
