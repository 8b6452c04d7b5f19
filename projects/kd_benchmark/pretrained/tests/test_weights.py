"""The committed weights of the pretrained benchmark: each file is the one its record names
(sha256, size) and loads whole into the config that uses it."""
import glob
import json
import logging
import os

import pytest
import torch
from detectron2.modeling import build_model

from dla_kd.config import load_config
from dla_kd.utils.files import file_sha256

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
RECORDS = sorted(glob.glob(os.path.join(HERE, "weights", "*.json")))
# weights file -> the config that loads it
USERS = {
    "mobilenetv3_small_100_regions.fp16.pth": "configs/student_MNv3_small_pretrained.yaml",
    "R_18_regions.fp16.pth": "configs/teacher_R_18_FPN128.yaml",
}


@pytest.mark.parametrize("record", RECORDS, ids=os.path.basename)
def test_committed_weights_are_the_recorded_file(record):
    info = json.load(open(record))
    path = record[: -len(".json")]
    assert info["file"] == os.path.basename(path)
    assert os.path.getsize(path) == info["size_bytes"] and file_sha256(path) == info["sha256"]


@pytest.mark.parametrize("name", [n for n in USERS if os.path.isfile(os.path.join(HERE, "weights", n))])
def test_backbone_weights_fill_the_whole_backbone_of_their_config(name, monkeypatch, caplog):
    monkeypatch.chdir(REPO)  # configs name repo-relative weight paths
    cfg = load_config(os.path.join(HERE, USERS[name]), ["MODEL.DEVICE", "cpu"])
    state = torch.load(os.path.join(HERE, "weights", name), map_location="cpu")
    with caplog.at_level(logging.WARNING):
        model = build_model(cfg)
    if cfg.MODEL.TIMM.PRETRAINED_PATH:  # timm body: loaded at build time
        body = model.backbone.bottom_up.body.state_dict()
        assert set(state) == {k for k in body if not k.endswith("num_batches_tracked")}
        for key, value in state.items():
            assert torch.equal(body[key].to(value.dtype), value), key
        assert "Missing in" not in caplog.text
    else:  # Detectron2 ResNet: MODEL.WEIGHTS holds backbone.bottom_up.*
        bottom_up = {f"backbone.bottom_up.{k}" for k in model.backbone.bottom_up.state_dict()}
        assert set(state["model"]) == {k for k in bottom_up if not k.endswith("num_batches_tracked")}


TEACHER = os.path.join(HERE, "weights", "teacher_R_18_FPN128.fp16.pth")


@pytest.mark.skipif(not os.path.isfile(TEACHER), reason="the benchmark's teacher is not committed yet")
def test_the_committed_teacher_fills_its_whole_model_and_every_run_names_its_sha256(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_config(os.path.join(HERE, "configs", "teacher_R_18_FPN128.yaml"), ["MODEL.DEVICE", "cpu"])
    state = torch.load(TEACHER, map_location="cpu")["model"]
    model_keys = {k for k in build_model(cfg).state_dict() if not k.endswith("num_batches_tracked")}
    assert set(state) == model_keys
    assert all(value.dtype == torch.float16 for value in state.values() if value.is_floating_point())
    record = json.load(open(TEACHER + ".json"))
    base = load_config(os.path.join(HERE, "configs", "recipes", "Base-Distill-R_18-to-MNv3S.yaml"), [])
    assert base.DISTILL.TEACHER.SHA256 == record["sha256"]
    assert base.DISTILL.TEACHER.WEIGHTS == os.path.relpath(TEACHER, REPO)
