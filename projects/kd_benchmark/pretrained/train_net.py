#!/usr/bin/env python
"""tools/train_net.py with the pre-training corpus registered (``pretrain_data.py``):

    python projects/kd_benchmark/pretrained/train_net.py --config-file projects/kd_benchmark/pretrained/configs/pretrain_MNv3_small_BN.yaml

Same arguments as tools/train_net.py (one process per machine here: the corpus is registered in
this process, which Detectron2's ``launch`` runs ``main`` in when ``--num-gpus 1``).
"""
import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pretrain_data import register_pretrain_corpus  # noqa: E402

if __name__ == "__main__":
    register_pretrain_corpus()
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    runpy.run_path(os.path.join(repo, "tools", "train_net.py"), run_name="__main__")
