"""Where a model's weights come from when training starts: MODEL.WEIGHTS, then a distillation
student's teacher copies (SimKD heads, DISTILL.INIT_FROM_TEACHER); a resumed checkpoint as it is;
and the per-module FrozenBN guard (MODEL.WEIGHTS, the timm pretrained file, the teacher)."""
import os

import pytest
import timm
import torch

import dla_kd  # noqa: F401
from dla_kd.engine import Trainer, load_config
from tiny_models import MICRO, TINY, distill_cfg, save_random_weights, write_config

HEADS = ("proposal_generator.", "roi_heads.")
TIMM_R18 = ["MODEL.BACKBONE.NAME", "build_timm_fpn_backbone", "MODEL.TIMM.NAME", "resnet18",
            "MODEL.TIMM.NORM", "FrozenBN", "MODEL.FPN.IN_FEATURES", "['stride4', 'stride8', 'stride16', 'stride32']"]


def _teacher(tmp_path, opts=(), name="teacher"):
    """(config, weights) of a tiny teacher (seed 1)."""
    config = write_config(str(tmp_path / f"{name}.yaml"), TINY, opts)
    return config, save_random_weights(config, str(tmp_path / f"{name}.pth"), seed=1)


def _plain_student(tmp_path, opts=()):
    """A plain tiny detector checkpoint (seed 2), as a supervised student run leaves it."""
    config = write_config(str(tmp_path / "plain.yaml"), TINY, opts)
    return save_random_weights(config, str(tmp_path / "plain.pth"), seed=2)


def _started(cfg, resume=False):
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    return trainer._trainer.model


def test_plain_weights_reach_a_simkd_backbone_and_keep_the_teacher_heads(use_synthetic_root, tmp_path):
    config, weights = _teacher(tmp_path, ["MODEL.FPN.OUT_CHANNELS", "64"])
    plain = _plain_student(tmp_path)
    model = _started(distill_cfg(config, ["simkd"], teacher_weights=weights,
                                 opts=["MODEL.WEIGHTS", plain, "OUTPUT_DIR", str(tmp_path / "out")]))
    student, teacher = model.student.state_dict(), model.teacher.state_dict()
    plain_state = torch.load(plain)["model"]
    backbone = {k: v for k, v in plain_state.items() if k.startswith("backbone.")}
    assert backbone
    for k, v in backbone.items():  # the plain backbone lands in the wrapped one
        assert torch.equal(student[k.replace("backbone.", "backbone.inner.", 1)], v), k
    cls_score = "roi_heads.box_predictor.cls_score.weight"  # fits both: the checkpoint did overwrite it
    assert plain_state[cls_score].shape == teacher[cls_score].shape
    assert not torch.equal(plain_state[cls_score], teacher[cls_score])
    for k, v in student.items():
        if k.startswith(HEADS):
            assert torch.equal(v, teacher[k]), f"reused teacher head {k} replaced by MODEL.WEIGHTS"


def test_init_from_teacher_is_applied_after_plain_weights(use_synthetic_root, tmp_path):
    config, weights = _teacher(tmp_path)
    plain = _plain_student(tmp_path)
    prefixes = ("backbone.fpn", "proposal_generator", "roi_heads")
    model = _started(distill_cfg(config, ["fitnet"], teacher_weights=weights, opts=[
        "MODEL.WEIGHTS", plain, "OUTPUT_DIR", str(tmp_path / "out"),
        "DISTILL.INIT_FROM_TEACHER.ENABLED", "True", "DISTILL.INIT_FROM_TEACHER.PREFIXES", str(list(prefixes))]))
    student, teacher = model.student.state_dict(), model.teacher.state_dict()
    plain_state = torch.load(plain)["model"]
    copied = [k for k in student if k.startswith(prefixes)]
    assert any(not torch.equal(plain_state[k], teacher[k]) for k in copied)  # both sources fill them
    for k in copied:
        assert torch.equal(student[k], teacher[k]), f"{k}: MODEL.WEIGHTS first, then the teacher"
    bottom_up = [k for k in student if k.startswith("backbone.bottom_up.")]
    assert all(torch.equal(student[k], plain_state[k]) for k in bottom_up)  # MODEL.WEIGHTS alone


def test_resume_keeps_the_trained_tensors(use_synthetic_root, tmp_path):
    config, weights = _teacher(tmp_path)
    out = tmp_path / "out"
    cfg = distill_cfg(config, ["simkd"], teacher_weights=weights, opts=[
        "MODEL.WEIGHTS", _plain_student(tmp_path), "OUTPUT_DIR", str(out), "DISTILL.SIMKD.TRAIN_HEADS", "True",
        "DISTILL.INIT_FROM_TEACHER.ENABLED", "True", "DISTILL.INIT_FROM_TEACHER.PREFIXES", "['backbone']"])
    trained = {k: v + 0.5 if v.is_floating_point() else v for k, v in Trainer.build_model(cfg).state_dict().items()}
    os.makedirs(out)
    torch.save({"model": trained, "iteration": 4}, str(out / "model_0000004.pth"))
    (out / "last_checkpoint").write_text("model_0000004.pth")
    model = _started(cfg, resume=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, trained[k]), f"{k}: not the checkpoint's trained tensor"


def test_frozen_bn_initialised_from_the_teacher_trains(use_synthetic_root, tmp_path):
    frozen = ["MODEL.RESNETS.NORM", "FrozenBN"]
    config, weights = _teacher(tmp_path, frozen)

    def cfg(prefixes):
        return distill_cfg(config, ["fitnet"], teacher_weights=weights, opts=frozen + [
            "OUTPUT_DIR", str(tmp_path / "out"), "DISTILL.INIT_FROM_TEACHER.ENABLED", "True",
            "DISTILL.INIT_FROM_TEACHER.PREFIXES", str(prefixes)])

    _started(cfg(["backbone"]))  # the bottom-up's FrozenBN comes from the teacher: accepted
    with pytest.raises(ValueError, match=r"FrozenBN layers have no source of weights: \['student.backbone.bottom_up.stem"):
        _started(cfg(["backbone.fpn"]))


def test_timm_pretrained_file_covers_only_the_timm_body(use_synthetic_root, tmp_path):
    path = str(tmp_path / "resnet18.pth")
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    timm_opts = MICRO + TIMM_R18 + ["MODEL.TIMM.PRETRAINED_PATH", path, "OUTPUT_DIR", str(tmp_path / "out")]
    _started(load_config(TINY, timm_opts))  # FrozenBN only in the body, which the file fills
    with pytest.raises(ValueError, match=r"FrozenBN layers have no source of weights: \['backbone.fpn_lateral2.norm'") as e:
        _started(load_config(TINY, timm_opts + ["MODEL.FPN.NORM", "FrozenBN"]))
    assert "bottom_up" not in str(e.value)
