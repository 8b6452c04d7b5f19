#!/usr/bin/env python
"""Pseudo-label pages of your own with a teacher: a COCO file with scores to train on.

    python tools/pseudo_label.py --config-file configs/doclaynet/mask_rcnn_R_101_FPN_3x.yaml \\
        --input scans/ reports/ contract.pdf --output datasets/pseudo/mydocs \\
        MODEL.WEIGHTS output/doclaynet/mask_rcnn_R_101_FPN_3x/model_final.pth
    python tools/pseudo_label.py --exported export/teacher/model.onnx --input scans/ --output datasets/pseudo/mydocs

Teachers from other toolkits (docs/external_teachers.md), behind a class map (YAML/JSON) that puts
their classes onto a registered category table with per-class score thresholds:

    python tools/pseudo_label.py --teacher rapid-layout --class-map cdla_to_publaynet \\
        --input scans/ --output datasets/pseudo/mydocs_cdla      # an in-process plugin
    python tools/pseudo_label.py --results yolo/predictions.json \\
        --class-map docstructbench_to_doclaynet --teacher-model yolo/best.pt \\
        --input scans/ --output datasets/pseudo/mydocs_yolo      # another tool's COCO results

Folders are searched recursively for images and PDFs; PDF pages are rendered at --dpi into
``<output>/pages/``. Writes ``<output>/pseudo_labels.json`` (COCO: every detection scoring at
least --min-score, or its class's threshold in the class map, with its ``score``; ``info`` records the teacher, its classes and the
threshold) through the journal ``<output>/pseudo_labels.jsonl``: run the same command again
after an interruption and only the pages not yet labelled are labelled. Mask contours are
simplified to within --polygon-tolerance pixels. An output folder of another teacher (or
--min-score, --dpi, --polygon-tolerance) is refused. Empty pages, unreadable images, encrypted or
corrupt PDFs are listed and skipped. Train on the file with
``dla_kd.data.register_pseudo_labeled(name, table, json_file, score_thresh=...)``
(README, "Distil on your own PDFs").

Exit status: 0 every page labelled (empty pages aside); 1 some files or pages could not be read
or labelled (listed); 2 nothing run (the model could not be loaded, or the output folder holds
another teacher's labels, the class map or the results file cannot be used: the message names
the key or the record).
"""
import argparse
import sys

import dla_kd  # noqa: F401  (registers datasets, backbones, meta-architectures)
from dla_kd import Predictor
from dla_kd.data.pages import BLANK_REASON
from dla_kd.data.pseudo_labeled import PseudoLabelMismatchError
from dla_kd.engine import load_config
from dla_kd.predict.cli import add_model_and_pages_arguments, parse_model_and_pages
from dla_kd.predict.external import ClassMap, ClassMapError, ResultsFileError, ResultsTeacher, build_external_teacher
from dla_kd.predict.external.labeller import ExternalLabeller
from dla_kd.predict.pseudo_label import DEFAULT_POLYGON_TOLERANCE, pseudo_label, teacher_record
from dla_kd.utils.cli import run_tool

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = add_model_and_pages_arguments(parser, "the teacher's config; weights as MODEL.WEIGHTS",
                                          "output folder (pages, journal, COCO file)")
    model.add_argument("--teacher", metavar="PLUGIN",
                       help="a teacher from another toolkit run in-process: rapid-layout, or a plugin of --plugin-module")
    model.add_argument("--results", metavar="JSON",
                       help="a COCO detection-results JSON another tool wrote for the --input pages")
    external = parser.add_argument_group("teachers from other toolkits (--teacher, --results)")
    external.add_argument("--class-map", metavar="YAML",
                          help="the teacher's classes -> a category table, with score thresholds (required): a YAML/JSON "
                               "file, or a shipped map by name (cdla_to_publaynet, docstructbench_to_doclaynet)")
    external.add_argument("--teacher-model", metavar="PATH",
                          help="--teacher: its model file instead of its default; --results: the model that wrote "
                               "them (recorded with its sha256)")
    external.add_argument("--teacher-name", default="", help="--results: the tool or model's name (recorded)")
    external.add_argument("--image-list", metavar="JSON",
                          help="--results: a COCO file listing the pages with the image ids the results use")
    external.add_argument("--plugin-module", action="append", default=[], metavar="MODULE",
                          help="import this module first (it registers plugins of your own); repeatable")
    parser.add_argument("--min-score", type=float, default=None,
                        help="lowest score written (default 0.05; the training threshold is chosen when registering; "
                             "external teachers: the class map's thresholds)")
    parser.add_argument("--polygon-tolerance", type=float, default=DEFAULT_POLYGON_TOLERANCE, metavar="PIXELS",
                        help="mask contours simplified to within this many pixels (default %(default)s; 0: every "
                             "contour point, ~100x larger files)")
    return parser


EXTERNAL_ONLY = ("class_map", "teacher_model", "teacher_name", "image_list", "plugin_module")
DEFAULT_MIN_SCORE = 0.05


def check_arguments(parser, args) -> None:
    """Usage errors for options given to the wrong kind of teacher."""
    external = bool(args.teacher or args.results)
    if external:
        wrong = ["config overrides"] * bool(args.opts) + ["--min-score"] * (args.min_score is not None)
        if wrong:
            parser.error(f"{' and '.join(wrong)} do not apply to --teacher/--results: the class map's min_score "
                         "and score_thresh are the thresholds")
        if not args.class_map:
            parser.error("--teacher and --results need --class-map (the teacher's classes -> a category table)")
    else:
        given = [f"--{k.replace('_', '-')}" for k in EXTERNAL_ONLY if getattr(args, k)]
        if given:
            parser.error(f"{', '.join(given)} apply to --teacher/--results only")
        if args.min_score is None:
            args.min_score = DEFAULT_MIN_SCORE


def load_teacher(args):
    """(Predictor or external labeller, teacher record for the COCO info)."""
    if args.teacher or args.results:
        class_map = ClassMap.from_file(args.class_map)
        if args.results:
            teacher = ResultsTeacher(args.results, class_map, args.image_list, args.teacher_model, args.teacher_name)
        else:
            teacher = build_external_teacher(args.teacher, args.plugin_module, model=args.teacher_model,
                                             num_threads=args.threads, min_score=class_map.lowest_threshold)
        return ExternalLabeller(teacher, class_map, args.polygon_tolerance), teacher.record()
    if args.exported:
        predictor = Predictor.from_exported(args.exported, args.threads, min_score=args.min_score)
        return predictor, teacher_record(predictor.spec.class_names, exported=args.exported)
    cfg = load_config(args.config_file, args.opts)
    predictor = Predictor.from_config(cfg, num_threads=args.threads, min_score=args.min_score)
    return predictor, teacher_record(predictor.spec.class_names, config_file=args.config_file, weights=cfg.MODEL.WEIGHTS)


def main(argv=None) -> int:
    parser = build_parser()
    args = parse_model_and_pages(parser, argv)
    check_arguments(parser, args)
    try:
        predictor, teacher = load_teacher(args)
    except (ClassMapError, ResultsFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # config, checkpoint or export info: nothing can run, say why
        print(f"error: cannot load the teacher: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    try:
        summary = pseudo_label(predictor, args.input, args.output, teacher, dpi=args.dpi, min_score=args.min_score,
                               polygon_tolerance=args.polygon_tolerance, progress=not args.no_progress)
    except (PseudoLabelMismatchError, ResultsFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{summary.labelled} pages labelled, {summary.resumed} labelled before: {summary.json_file}")
    if summary.dropped:
        counts = ", ".join(f"{name} {n}" for name, n in sorted(summary.dropped.items()))
        print(f"{sum(summary.dropped.values())} detections of unmapped classes dropped ({counts})")
    unmatched = getattr(getattr(predictor, "teacher", None), "unmatched_pages", [])
    if unmatched:
        print(f"{len(unmatched)} pages have no detection in {args.results} (labelled empty), e.g. {unmatched[0].file_name}")
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
