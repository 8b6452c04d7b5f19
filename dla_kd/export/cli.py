"""Command-line helper shared by tools/export_model.py and tools/predict.py."""
import os
import re
from typing import List, Sequence, Tuple

CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def split_config_overrides(paths: Sequence[str], opts: Sequence[str]) -> Tuple[List[str], List[str]]:
    """argparse gives ``--input a.png MODEL.WEIGHTS m.pth`` all to the list option: from the first
    item that looks like a config key (``MODEL.WEIGHTS``) and is not an existing file, the items
    are config overrides. Returns (paths, overrides + opts)."""
    paths = list(paths)
    for i, p in enumerate(paths):
        if CONFIG_KEY.match(p) and not os.path.exists(p):
            return paths[:i], paths[i:] + list(opts)
    return paths, list(opts)
