"""Package-level behaviour: the Detectron2 import guard, the model cost of a config."""
import subprocess
import sys

import pytest

from detectron2.modeling import build_model

from dla_kd.engine import load_config
from dla_kd.evaluation.model_cost import model_cost
from tiny_models import MICRO, TINY


def test_import_without_detectron2_explains_how_to_install():
    code = "import sys; sys.modules['detectron2'] = None; import dla_kd"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "ImportError: dla-kd needs Detectron2" in proc.stderr
    assert "sal-detectron2==0.7.2" in proc.stderr and "scripts/setup.sh" in proc.stderr
    assert "git+https://github.com/facebookresearch/detectron2.git" in proc.stderr


def test_model_cost_counts_parameters_and_flops():
    cfg = load_config(TINY, MICRO)
    cost = model_cost(cfg, 128, 128, detections=5)
    assert cost["params_M"] == pytest.approx(sum(p.numel() for p in build_model(cfg).parameters()) / 1e6)
    assert 0 < cost["backbone_gflops"] < cost["gflops"]
    # Twice the pixels: the backbone's flops double (convolutions), the heads' workload is fixed.
    bigger = model_cost(cfg, 256, 128, detections=5)
    assert bigger["backbone_gflops"] == pytest.approx(2 * cost["backbone_gflops"], rel=0.05)
