"""Export on a CUDA machine: the export builds, traces and checks the model on the CPU whatever
MODEL.DEVICE says (Detectron2's default is cuda), so a GPU machine writes the file a CPU machine
does. This machine has no GPU: MODEL.DEVICE cuda would fail at the first tensor moved there."""
import hashlib
import json
import os

import pytest
import torch

from dla_kd.engine import load_config
from dla_kd.export import extract_student
from tiny_models import tool_main

pytestmark = pytest.mark.usefixtures("one_thread")


def _sha1(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def test_export_with_model_device_cuda_runs_on_the_cpu(detector, tmp_path):
    assert not torch.cuda.is_available()  # else this test proves nothing
    config, weights, _ = detector
    outputs = {}
    for device in ("cpu", "cuda"):
        out = str(tmp_path / device)
        code = tool_main("export_model")(["--config-file", config, "--format", "onnx", "--output", out,
                                          "MODEL.WEIGHTS", weights, "MODEL.DEVICE", device])
        assert code == 0, device  # exported and checked against PyTorch (on the CPU)
        info = json.load(open(os.path.join(out, "export_info.json")))
        assert info["export_device"] == "cpu" and info["check"]["passed"] is True
        # The plain config keeps the user's device (what PyTorch prediction from it uses).
        assert load_config(os.path.join(out, "student_config.yaml")).MODEL.DEVICE == device
        outputs[device] = _sha1(os.path.join(out, "model.onnx"))
    assert outputs["cuda"] == outputs["cpu"]  # the same file


def test_extract_student_with_model_device_cuda(detector, tmp_path):
    config, weights, _ = detector
    cfg = load_config(config, ["MODEL.DEVICE", "cuda"])
    config_path, weights_path = extract_student(cfg, weights, str(tmp_path / "student"))
    state = torch.load(weights_path)["model"]
    assert {t.device.type for t in state.values()} == {"cpu"}
    assert load_config(config_path).MODEL.DEVICE == "cuda"
