"""What every command-line tool of ``tools/`` does when run as a script, and the argument
handling several of them share."""
import logging
import os
import re
import sys
import warnings
from typing import Callable, List, Optional, Sequence, Tuple


def run_tool(main: Callable[[], Optional[int]], quiet: bool = False) -> None:
    """Run a tool's ``main()`` and exit with its status: the ``dla_kd`` logger prints to the console
    (warnings and errors only with ``quiet``: tools whose own output is the progress bar and a
    summary), Detectron2's anchor generator's ``torch.meshgrid`` warning is silenced."""
    from detectron2.utils.logger import setup_logger

    warnings.filterwarnings("ignore", message="torch.meshgrid")
    setup_logger(name="dla_kd", abbrev_name="dla_kd")
    if quiet:
        logging.getLogger("dla_kd").setLevel(logging.WARNING)
    sys.exit(main())


CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def split_config_overrides(paths: Sequence[str], opts: Sequence[str]) -> Tuple[List[str], List[str]]:
    """argparse gives ``--input a.png MODEL.WEIGHTS m.pth`` all to the list option: from the first
    item that looks like a config key (``MODEL.WEIGHTS``) and is not an existing file, the items
    are config overrides. Returns (paths, overrides + opts). Shared by tools/export_model.py and
    tools/predict.py."""
    paths = list(paths)
    for i, p in enumerate(paths):
        if CONFIG_KEY.match(p) and not os.path.exists(p):
            return paths[:i], paths[i:] + list(opts)
    return paths, list(opts)
