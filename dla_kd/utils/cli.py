"""What every command-line tool of ``tools/`` does when run as a script."""
import logging
import sys
import warnings
from typing import Callable, Optional


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
