"""Command-line arguments shared by tools/predict.py and tools/pseudo_label.py: the model (a
checkpoint's config with KEY VALUE overrides, or an exported file) and the pages it reads."""
import argparse
from typing import Optional, Sequence

from ..utils.cli import split_config_overrides
from .batch import DEFAULT_DPI


def add_model_and_pages_arguments(parser: argparse.ArgumentParser, config_help: str, output_help: str):
    """``--config-file`` | ``--exported``, ``--input``, ``--output``, ``--dpi``, ``--threads``,
    ``--no-progress`` and the trailing ``KEY VALUE`` overrides. Returns the required group of model
    options (where a tool adds other kinds of models)."""
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--config-file", help=config_help)
    model.add_argument("--exported", metavar="PATH", help="exported model.ts / model.onnx (or its folder)")
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH", help="images, folders, PDFs")
    parser.add_argument("--output", required=True, help=output_help)
    parser.add_argument("--dpi", type=float, default=DEFAULT_DPI, help="PDF render resolution (default %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads: onnxruntime's for an exported model, torch's for a checkpoint (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides, incl. MODEL.WEIGHTS")
    return model


def parse_model_and_pages(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None,
                          checkpoint_only: Sequence[str] = (), exported_hint: str = "") -> argparse.Namespace:
    """Parsed arguments, config overrides written after ``--input`` moved to ``opts``; exits with a
    usage error when no page is given, or when an ``--exported`` model gets config overrides or one
    of the ``checkpoint_only`` options (attribute names), which only a checkpoint can take."""
    args = parser.parse_args(argv)
    args.input, args.opts = split_config_overrides(args.input, args.opts)
    if not args.input:
        parser.error("--input needs at least one image, folder or PDF")
    given = ["config overrides"] * bool(args.opts)
    given += [f"--{name.replace('_', '-')}" for name in checkpoint_only if getattr(args, name)]
    if args.exported and given:
        parser.error(f"{' and '.join(given)} apply to --config-file checkpoints, not to --exported models"
                     + (f": {exported_hint}" if exported_hint else ""))
    return args
