#!/usr/bin/env python
"""Pseudo-label pages of your own with a teacher: a COCO file with scores to train on.

    python tools/pseudo_label.py --config-file configs/doclaynet/mask_rcnn_R_101_FPN_3x.yaml \\
        --input scans/ reports/ contract.pdf --output datasets/pseudo/mydocs \\
        MODEL.WEIGHTS output/doclaynet/mask_rcnn_R_101_FPN_3x/model_final.pth
    python tools/pseudo_label.py --exported export/teacher/model.onnx --input scans/ --output datasets/pseudo/mydocs

Folders are searched recursively for images and PDFs; PDF pages are rendered at --dpi into
``<output>/pages/``. Writes ``<output>/pseudo_labels.json`` (COCO: every detection scoring at
least --min-score, with its ``score``; ``info`` records the teacher, its classes and the
threshold) through the journal ``<output>/pseudo_labels.jsonl``: run the same command again
after an interruption and only the pages not yet labelled are labelled. Mask contours are
simplified to within --polygon-tolerance pixels. An output folder of another teacher (or
--min-score, --dpi, --polygon-tolerance) is refused. Empty pages, unreadable images, encrypted or
corrupt PDFs are listed and skipped. Train on the file with
``dla_kd.data.register_pseudo_labeled(name, table, json_file, score_thresh=...)``
(README, "Distil on your own PDFs").

Exit status: 0 every page labelled (empty pages aside); 1 some files or pages could not be read
or labelled (listed); 2 nothing run (the model could not be loaded, or the output folder holds
another teacher's labels).
"""
import argparse
import sys

import dla_kd  # noqa: F401  (registers datasets, backbones, meta-architectures)
from dla_kd import Predictor
from dla_kd.data.pages import BLANK_REASON
from dla_kd.data.pseudo_labeled import PseudoLabelMismatchError
from dla_kd.engine import load_config
from dla_kd.predict.cli import add_model_and_pages_arguments, parse_model_and_pages
from dla_kd.predict.pseudo_label import DEFAULT_POLYGON_TOLERANCE, pseudo_label, teacher_record
from dla_kd.utils.cli import run_tool

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_and_pages_arguments(parser, "the teacher's config; weights as MODEL.WEIGHTS",
                                  "output folder (pages, journal, COCO file)")
    parser.add_argument("--min-score", type=float, default=0.05,
                        help="lowest score written (default %(default)s; the training threshold is chosen when registering)")
    parser.add_argument("--polygon-tolerance", type=float, default=DEFAULT_POLYGON_TOLERANCE, metavar="PIXELS",
                        help="mask contours simplified to within this many pixels (default %(default)s; 0: every "
                             "contour point, ~100x larger files)")
    return parser


def load_teacher(args):
    """(Predictor, teacher record for the COCO info)."""
    if args.exported:
        predictor = Predictor.from_exported(args.exported, args.threads, min_score=args.min_score)
        return predictor, teacher_record(predictor.spec.class_names, exported=args.exported)
    cfg = load_config(args.config_file, args.opts)
    predictor = Predictor.from_config(cfg, num_threads=args.threads, min_score=args.min_score)
    return predictor, teacher_record(predictor.spec.class_names, config_file=args.config_file, weights=cfg.MODEL.WEIGHTS)


def main(argv=None) -> int:
    args = parse_model_and_pages(build_parser(), argv)
    try:
        predictor, teacher = load_teacher(args)
    except Exception as e:  # config, checkpoint or export info: nothing can run, say why
        print(f"error: cannot load the teacher: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    try:
        summary = pseudo_label(predictor, args.input, args.output, teacher, dpi=args.dpi, min_score=args.min_score,
                               polygon_tolerance=args.polygon_tolerance, progress=not args.no_progress)
    except PseudoLabelMismatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{summary.labelled} pages labelled, {summary.resumed} labelled before: {summary.json_file}")
    problems = [s for s in summary.skipped if s.reason != BLANK_REASON] + summary.failures
    blank = len(summary.skipped) + len(summary.failures) - len(problems)
    if blank:
        print(f"{blank} empty pages skipped")
    if problems:
        print(f"{len(problems)} could not be labelled:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_tool(main, quiet=True)
