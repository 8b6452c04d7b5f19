"""DistillGeneralizedRCNN: frozen teacher, gradients, zero KD for a copied student, the teacher
answering on the student's RoIs, inference = student alone, extraction, build-time errors."""
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

import dla_kd  # noqa: F401
from dla_kd.checkpoint import IncompleteCheckpointError
from dla_kd.distill import DISTILLER_REGISTRY
from dla_kd.engine import load_config
from dla_kd.export import extract_student
from dla_kd.export.student import deployable_cfg
from tiny_models import MICRO, TINY, TINY_CASCADE, distill_cfg, fake_batch, write_config

ALL_LOSSES = sorted(DISTILLER_REGISTRY._obj_map)
FEATURE_LOSSES = ["fitnet", "pkd", "cwd", "defeat", "fgd", "mgd", "reviewkd"]
ROI_LOSSES = ["logit_kd", "logit_mse", "box_kd", "mask_kd", "crosskd"]


def _teacher(tmp_path, base=TINY, name="teacher", opts=("MODEL.FPN.OUT_CHANNELS", "64")):
    """(config path, weights path) of a random-init tiny teacher saved like a trained one."""
    config = write_config(str(tmp_path / f"{name}.yaml"), base, opts)
    torch.manual_seed(123)
    model = build_model(load_config(config))
    weights = str(tmp_path / f"{name}.pth")
    torch.save({"model": model.state_dict()}, weights)
    return config, weights


def _losses(model, batch=None, it=0):
    with EventStorage(it):
        return model(batch or fake_batch())


def _kd_losses(losses):
    return {k: v for k, v in losses.items() if k.startswith("loss_kd_")}


def test_teacher_frozen_student_and_adapters_train(tmp_path):
    config, weights = _teacher(tmp_path)
    model = build_model(distill_cfg(config, ["fitnet", "logit_kd", "mgd"], teacher_weights=weights))
    model.train()
    teacher = model.teacher
    assert not teacher.training and all(not m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    # The teacher is not part of the module tree: not saved, not optimised, not wrapped by DDP.
    assert not any(k.startswith("teacher") for k in model.state_dict())
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not teacher_ids & {id(p) for p in model.parameters()}

    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in model.student.state_dict().items()}
    adapters_before = {k: v.clone() for k, v in model.distillers.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    for it in range(2):
        losses = _losses(model, fake_batch(seed=it), it)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        assert all(p.grad is None for p in teacher.parameters())
        model.train()  # what the trainer does; the teacher must stay in eval mode
        assert not teacher.training
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), f"teacher tensor {k} changed"
    changed = [k for k, v in model.student.state_dict().items() if not torch.equal(v, student_before[k])]
    assert any("backbone.bottom_up" in k for k in changed) and any("roi_heads" in k for k in changed)
    adapters = {k for k, v in model.distillers.state_dict().items() if not torch.equal(v, adapters_before[k])}
    assert any(k.startswith("fitnet.adapters") for k in adapters) and any(k.startswith("mgd.") for k in adapters)


@pytest.mark.parametrize("student_base,teacher_base", [(TINY, TINY), (TINY_CASCADE, TINY_CASCADE)])
def test_kd_is_zero_for_a_copied_student(tmp_path, student_base, teacher_base):
    """Student = exact copy of the teacher (same config, weights copied), identity adapters."""
    config, weights = _teacher(tmp_path, teacher_base, opts=())
    losses = ["fitnet", "pkd", "cwd", "defeat", "logit_kd", "logit_mse", "box_kd", "mask_kd", "crosskd"]
    cfg = distill_cfg(
        config, losses, base=student_base, teacher_weights=weights,
        opts=["DISTILL.INIT_FROM_TEACHER.ENABLED", "True",
              "DISTILL.INIT_FROM_TEACHER.PREFIXES", "['backbone', 'proposal_generator', 'roi_heads']"],
    )
    model = build_model(cfg).train()
    assert all(isinstance(a, torch.nn.Identity) for a in model.distillers["fitnet"].adapters.values())
    kd = _kd_losses(_losses(model))
    assert len(kd) >= len(losses)
    for name, value in kd.items():
        assert abs(float(value)) < 1e-5, f"{name} = {float(value)} for a copied student"


def test_kd_is_positive_for_a_different_student(tmp_path):
    """The counterpart of the zero test: the same losses see a random student."""
    config, weights = _teacher(tmp_path, opts=())
    model = build_model(distill_cfg(config, FEATURE_LOSSES + ROI_LOSSES, teacher_weights=weights)).train()
    for name, value in _kd_losses(_losses(model)).items():
        assert float(value) > 0, name


def test_simkd_student_reuses_teacher_heads(tmp_path):
    config, weights = _teacher(tmp_path)
    model = build_model(distill_cfg(config, ["simkd"], teacher_weights=weights))
    student, teacher = model.student, model.teacher
    assert type(student.backbone).__name__ == "ProjectedBackbone"
    assert {s.channels for s in student.backbone.output_shape().values()} == {64}  # teacher width
    for name in ("proposal_generator", "roi_heads"):
        for (k, v), (_, tv) in zip(getattr(student, name).state_dict().items(), getattr(teacher, name).state_dict().items()):
            assert torch.equal(v, tv), k
        assert not any(p.requires_grad for p in getattr(student, name).parameters())  # TRAIN_HEADS False
    losses = _losses(model.train())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in student.backbone.projector.parameters())
    assert model.student_cfg.MODEL.FPN.OUT_CHANNELS == 32  # the student's own FPN, projected to 64

    # Identity projector + copied backbone: the SimKD feature loss vanishes.
    same, same_w = _teacher(tmp_path, name="same", opts=())
    cfg = distill_cfg(same, ["simkd"], teacher_weights=same_w, opts=[
        "DISTILL.SIMKD.PROJECTOR", "identity", "DISTILL.INIT_FROM_TEACHER.ENABLED", "True",
        "DISTILL.INIT_FROM_TEACHER.PREFIXES", "['backbone']"])
    model = build_model(cfg).train()
    assert float(_losses(model)["loss_kd_simkd"]) < 1e-8


@pytest.mark.parametrize(
    "student_base,teacher_base,stage,n_student_calls,n_teacher_calls",
    [
        (TINY, TINY, "last", 1, 1),
        (TINY, TINY_CASCADE, "last", 1, 1),
        (TINY, TINY_CASCADE, "average", 1, 3),  # every teacher stage on the student's RoIs
        (TINY_CASCADE, TINY, "last", 3, 3),  # the teacher's head on each student stage's RoIs
        (TINY_CASCADE, TINY_CASCADE, "last", 3, 3),
    ],
)
def test_teacher_answers_on_the_students_rois(tmp_path, student_base, teacher_base, stage, n_student_calls, n_teacher_calls):
    config, weights = _teacher(tmp_path, teacher_base)
    cfg = distill_cfg(config, ["logit_kd"], base=student_base, teacher_weights=weights,
                      opts=["DISTILL.ROI.CASCADE_TEACHER_STAGE", stage])
    model = build_model(cfg).train()
    calls = {"student": [], "teacher": []}
    for side, roi_heads in (("student", model.student.roi_heads), ("teacher", model.teacher.roi_heads)):
        original = roi_heads.box_pooler.forward

        def record(features, boxes, _side=side, _original=original):
            calls[_side].append(torch.cat([b.tensor for b in boxes]).clone())
            return _original(features, boxes)

        roi_heads.box_pooler.forward = record
    kd = _kd_losses(_losses(model))
    assert len(kd) == n_student_calls
    assert len(calls["student"]) == n_student_calls and len(calls["teacher"]) == n_teacher_calls
    per_teacher_call = n_teacher_calls // n_student_calls
    for k, s_boxes in enumerate(calls["student"]):
        for t_boxes in calls["teacher"][k * per_teacher_call:(k + 1) * per_teacher_call]:
            assert torch.equal(s_boxes, t_boxes)


def test_inference_is_the_student_alone(tmp_path):
    config, weights = _teacher(tmp_path)
    model = build_model(distill_cfg(config, ["fitnet", "logit_kd"], teacher_weights=weights)).eval()

    def fail(*args, **kwargs):
        raise AssertionError("the teacher ran at inference")

    model.teacher.backbone.forward = fail
    batch = fake_batch()
    with torch.no_grad():
        out = model(batch)
        ref = model.student(batch)
    assert len(out) == 2 and len(out[0]["instances"]) > 0
    for a, b in zip(out, ref):
        assert torch.equal(a["instances"].pred_boxes.tensor, b["instances"].pred_boxes.tensor)
        assert torch.equal(a["instances"].scores, b["instances"].scores)


@pytest.mark.parametrize("base", [TINY, TINY_CASCADE])
def test_detection_losses_are_the_plain_students(tmp_path, base):
    """KD only adds terms: on the same batch and RNG state, the distillation model's detection
    losses equal those of a plain GeneralizedRCNN holding the same student weights."""
    config, weights = _teacher(tmp_path, base)
    cfg = distill_cfg(config, ["fitnet", "logit_kd", "mask_kd"], base=base, teacher_weights=weights)
    model = build_model(cfg).train()
    plain = build_model(deployable_cfg(cfg)).train()
    plain.load_state_dict(model.student.state_dict())
    batch = fake_batch(seed=3)
    torch.manual_seed(0)
    ours = _losses(model, batch)
    torch.manual_seed(0)
    ref = _losses(plain, batch)
    assert set(ref) < set(ours) and all(k.startswith("loss_kd_") for k in set(ours) - set(ref))
    for k, v in ref.items():
        assert torch.equal(ours[k], v), k


@pytest.mark.parametrize("losses", [["fitnet", "logit_kd"], ["simkd", "box_kd"]])
def test_extracted_student_predicts_identically(tmp_path, losses):
    config, weights = _teacher(tmp_path)
    cfg = distill_cfg(config, losses, teacher_weights=weights)
    model = build_model(cfg)
    _losses(model.train())  # touch the graph once; weights as built
    ckpt = str(tmp_path / "distill.pth")
    torch.save({"model": model.state_dict()}, ckpt)
    config_path, weights_path = extract_student(cfg, ckpt, str(tmp_path / "student"))

    saved = torch.load(weights_path)["model"]
    assert not any(k.startswith(("teacher", "distillers", "student.")) for k in saved)
    assert set(saved) == set(model.student.state_dict())
    plain_cfg = load_config(config_path)
    assert plain_cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    plain = build_model(plain_cfg)
    from dla_kd.checkpoint import load_weights_strict

    load_weights_strict(plain, plain_cfg.MODEL.WEIGHTS, "extracted student")
    batch = fake_batch(seed=5)
    with torch.no_grad():
        ref = model.eval()(batch)
        out = plain.eval()(batch)
    for a, b in zip(ref, out):
        assert len(a["instances"]) > 0
        assert torch.equal(a["instances"].pred_boxes.tensor, b["instances"].pred_boxes.tensor)
        assert torch.equal(a["instances"].pred_classes, b["instances"].pred_classes)
        assert torch.equal(a["instances"].pred_masks, b["instances"].pred_masks)


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("detection_losses", [True, False])
def test_every_trainable_parameter_gets_a_gradient(tmp_path, name, detection_losses):
    """What DDP without find_unused_parameters needs, for each method and in distill-only mode."""
    config, weights = _teacher(tmp_path)
    cfg = distill_cfg(config, [name], teacher_weights=weights,
                      opts=["DISTILL.DETECTION_LOSSES", str(detection_losses)])
    model = build_model(cfg).train()
    losses = _losses(model)
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
    if not detection_losses:
        assert all(float(v) == 0 for k, v in losses.items() if not k.startswith("loss_kd_"))


def test_class_mismatch_is_a_build_error(tmp_path):
    config = write_config(str(tmp_path / "t.yaml"), TINY, ["MODEL.ROI_HEADS.NUM_CLASSES", "5"])
    with pytest.raises(ValueError, match="class mismatch.*predicts 5 classes, the student 11"):
        build_model(distill_cfg(config, ["fitnet"]))


def test_dataset_mismatch_is_a_build_error(tmp_path):
    config = write_config(str(tmp_path / "t.yaml"), TINY, [
        "DATASETS.TRAIN", "('synthetic_publaynet_train',)", "MODEL.ROI_HEADS.NUM_CLASSES", "11"])
    with pytest.raises(ValueError, match="dataset mismatch.*synthetic_publaynet_train"):
        build_model(distill_cfg(config, ["fitnet"]))


def test_missing_or_wrong_teacher_weights(tmp_path):
    config, _ = _teacher(tmp_path)
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="Teacher weights.*nope.pth not found"):
        build_model(distill_cfg(config, ["fitnet"], teacher_weights=missing))
    cfg = load_config(TINY, MICRO + ["MODEL.META_ARCHITECTURE", "DistillGeneralizedRCNN",
                                     "DISTILL.TEACHER.CONFIG", config])
    with pytest.raises(ValueError, match="DISTILL.TEACHER.WEIGHTS is empty"):
        build_model(cfg)
    # Weights of another architecture: a partial load must not pass silently.
    other = build_model(load_config(TINY_CASCADE, MICRO))
    torch.save({"model": other.state_dict()}, str(tmp_path / "other.pth"))
    with pytest.raises(IncompleteCheckpointError, match="missing keys"):
        build_model(distill_cfg(config, ["fitnet"], teacher_weights=str(tmp_path / "other.pth")))
    with pytest.raises(FileNotFoundError, match="Teacher config"):
        build_model(distill_cfg(str(tmp_path / "absent.yaml"), ["fitnet"]))


def test_unknown_loss_and_level_errors(tmp_path):
    config, weights = _teacher(tmp_path)
    with pytest.raises(KeyError, match="Unknown distillation loss 'fitnets'.*registered"):
        build_model(distill_cfg(config, ["fitnets"], teacher_weights=weights))
    with pytest.raises(KeyError, match="'p7', which the student backbone does not output"):
        build_model(distill_cfg(config, ["fitnet"], teacher_weights=weights,
                                opts=["DISTILL.FEATURE.IN_FEATURES", "['p2', 'p7']"]))


def test_plain_checkpoint_loads_into_the_student(tmp_path):
    from dla_kd.checkpoint import DLACheckpointer

    config, weights = _teacher(tmp_path, opts=())
    model = build_model(distill_cfg(config, ["fitnet"], teacher_weights=weights))
    DLACheckpointer(model).load(weights)  # a plain detector checkpoint
    for k, v in model.student.state_dict().items():
        assert torch.equal(v, model.teacher.state_dict()[k]), k


def test_crosskd_adapts_a_narrower_student_box_head(tmp_path):
    config, weights = _teacher(tmp_path, opts=("MODEL.ROI_BOX_HEAD.FC_DIM", "128"))
    model = build_model(distill_cfg(config, ["crosskd"], teacher_weights=weights)).train()
    adapter = model.distillers["crosskd"].adapters[0]
    assert isinstance(adapter, torch.nn.Linear) and (adapter.in_features, adapter.out_features) == (64, 128)
    losses = _losses(model)
    sum(losses.values()).backward()
    assert adapter.weight.grad is not None and float(adapter.weight.grad.abs().sum()) > 0
    assert model.student.roi_heads.box_head.fc1.weight.grad.abs().sum() > 0  # through the teacher predictor
    assert all(p.grad is None for p in model.teacher.parameters())
