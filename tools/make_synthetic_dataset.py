#!/usr/bin/env python
"""Generate one split of a synthetic layout dataset (PubLayNet- or DocLayNet-style pages).

    python tools/make_synthetic_dataset.py --style doclaynet --num-images 400 --out datasets/synthetic/doclaynet --seed 0

writes ``<out>/<split>/*.png`` and ``<out>/<split>.json``, then prints the json path and the number
of instances per category. An interrupted call resumes when called again; a finished split of the
same settings is kept (nothing drawn), one of other settings is refused unless ``--overwrite``.
"""

import argparse

from dla_kd.data.synthetic import STYLES, category_counts, generate_dataset


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--style", required=True, choices=sorted(STYLES))
    parser.add_argument("--num-images", required=True, type=int)
    parser.add_argument("--out", required=True, help="output folder (gets <split>.json and <split>/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="train")
    parser.add_argument("--width", type=int, help="image width in px (default: the style's)")
    parser.add_argument("--height", type=int, help="image height in px (default: the style's)")
    parser.add_argument("--workers", type=int, default=0, help="render in this many processes (same output)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished split of other settings in --out (refused without it)")
    args = parser.parse_args(argv)
    if (args.width is None) != (args.height is None):
        parser.error("--width and --height must be given together")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    page_size = (args.width, args.height) if args.width is not None else None
    json_path = generate_dataset(
        args.style,
        args.num_images,
        args.out,
        args.seed,
        split=args.split,
        page_size=page_size,
        num_workers=args.workers,
        other_settings="overwrite" if args.overwrite else "refuse",
    )
    print(json_path)
    for name, count in category_counts(json_path).items():
        print(f"{name:>16s} {count}")


if __name__ == "__main__":
    main()
