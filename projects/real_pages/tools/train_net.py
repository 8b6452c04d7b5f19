#!/usr/bin/env python
"""tools/train_net.py with the study's datasets registered (real_pages/datasets.py), in every
process it launches:

    .venv/bin/python projects/real_pages/tools/train_net.py --config-file projects/real_pages/configs/teacher_R_18_FPN128.yaml
"""
import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(REPO, "tools")]

from real_pages.datasets import register_real_pages  # noqa: E402

register_real_pages()  # at import: also in the processes --num-gpus spawns (they import this file)
from train_net import main  # noqa: E402,F401  (launch's workers find main here)

if __name__ == "__main__":
    runpy.run_path(os.path.join(REPO, "tools", "train_net.py"), run_name="__main__")
