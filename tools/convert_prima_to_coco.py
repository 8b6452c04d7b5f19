#!/usr/bin/env python
"""PRImA PAGE-XML pages + images -> COCO jsons (train/val split) for ``prima_train``/``prima_val``.

    python tools/convert_prima_to_coco.py --xml-dir datasets/PRImA/XML --image-dir datasets/PRImA/Images \
        --output-dir datasets/PRImA [--val-fraction 0.2] [--seed 0]

Writes ``annotations-train.json`` and ``annotations-val.json`` (``file_name`` relative to
``--image-dir``) and, with ``--val-fraction 0``, only ``annotations-all.json``. Class mapping and
folder layout: ``dla_kd/data/prima.py``.

A page whose XML is corrupt or whose image is missing (or ambiguous) does not stop the
conversion: the other pages are written, the failed ones are listed at the end on stderr and the
exit status is 1.
"""

import argparse
import json
import os
import sys

from dla_kd.data.prima import load_prima_page_xml, records_to_coco, split_records


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--xml-dir", required=True, help="folder of PAGE-XML files")
    parser.add_argument("--image-dir", required=True, help="folder of the page images")
    parser.add_argument("--output-dir", required=True, help="where the COCO jsons are written")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of pages in the val split (0: no split)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the page shuffle for the split")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    errors = []
    records = load_prima_page_xml(args.xml_dir, args.image_dir, errors=errors)
    if args.val_fraction > 0:
        train, val = split_records(records, args.val_fraction, args.seed)
        splits = {"train": train, "val": val}
    else:
        splits = {"all": records}
    os.makedirs(args.output_dir, exist_ok=True)
    for split, split_records_ in splits.items():
        path = os.path.join(args.output_dir, f"annotations-{split}.json")
        coco = records_to_coco(split_records_, args.image_dir)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(coco, f)
        print(f"{path}: {len(coco['images'])} pages, {len(coco['annotations'])} regions")
    if errors:
        print(f"{len(errors)} of {len(errors) + len(records)} pages failed and were not converted:", file=sys.stderr)
        for error in errors:
            print(f"  {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
