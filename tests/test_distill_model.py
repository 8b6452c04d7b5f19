"""DistillGeneralizedRCNN: frozen teacher, gradients, zero KD for a copied student, the teacher
answering on the student's RoIs, inference = student alone, extraction, build-time errors."""

import json
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

import dla_kd  # noqa: F401
from dla_kd.checkpoint import IncompleteCheckpointError
from dla_kd.distill import DISTILLER_REGISTRY
from dla_kd.distill.losses import kd_loss
from dla_kd.engine import load_config
from dla_kd.export import extract_student
from dla_kd.inference.student import deployable_cfg
from dla_kd.modeling.meta_arch.teacher import TeacherMismatchError
from dla_kd.utils.files import file_sha256
from tiny_models import MICRO, TINY, TINY_CASCADE, distill_cfg, fake_batch, save_random_weights, write_config

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
              "DISTILL.INIT_FROM_TEACHER.PREFIXES", "['backbone', 'proposal_generator', 'roi_heads']",
              "DISTILL.DEFEAT.ADAPTER", "channel"],  # identity; DeFeat's own 3x3 adapter starts near 0
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


def test_init_from_teacher_copies_what_matches_and_warns_about_the_rest(tmp_path, caplog):
    """Teacher FPN 64, student FPN 32: under the prefixes only the tensors of equal shape are
    copied (the heads' output biases); the others stay as built and a warning counts them."""
    config, weights = _teacher(tmp_path)
    with caplog.at_level("WARNING"):
        model = build_model(distill_cfg(config, ["fitnet"], teacher_weights=weights, opts=[
            "DISTILL.INIT_FROM_TEACHER.ENABLED", "True",
            "DISTILL.INIT_FROM_TEACHER.PREFIXES", "['backbone.fpn', 'proposal_generator', 'roi_heads']"]))
    student, teacher = model.student.state_dict(), model.teacher.state_dict()
    under = [k for k in student if k.startswith(("backbone.fpn", "proposal_generator", "roi_heads"))]
    same = [k for k in under if teacher[k].shape == student[k].shape]
    assert 0 < len(same) < len(under)
    assert all(torch.equal(student[k], teacher[k]) for k in same)
    assert f"initialised {len(same)} of {len(under)} student tensors" in caplog.text
    assert f"{len(under) - len(same)} differ in name or shape" in caplog.text


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


# Batches of labelled images, or with unlabeled images (DISTILL.UNLABELED): (unlabeled image
# indices, DISTILL.UNLABELED opts). The random teacher's 5 best detections score about 1/12:
# SCORE_THRESH 0 keeps them as boxes, 2 keeps none (no foreground anywhere: the leanest step).
# An all-unlabeled batch with teacher boxes and pseudo labels: tests/test_unlabeled.py.
UNLABELED_BATCHES = {
    "labelled": ((), []),
    "mixed": ((1,), ["DISTILL.UNLABELED.SCORE_THRESH", "0.0"]),
    "unlabeled_no_teacher_boxes": ((0, 1), ["DISTILL.UNLABELED.SCORE_THRESH", "2.0"]),
}


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("detection_losses,batch", [(True, "labelled"), (False, "labelled")]
                         + [(True, kind) for kind in UNLABELED_BATCHES if kind != "labelled"])
def test_every_trainable_parameter_gets_a_gradient(tmp_path, name, detection_losses, batch):
    """What DDP without find_unused_parameters needs, for each method, in distill-only mode and in
    batches with unlabeled images (all of them unlabeled, with and without teacher boxes)."""
    config, weights = _teacher(tmp_path)
    unlabeled, opts = UNLABELED_BATCHES[batch]
    if unlabeled:
        opts = opts + ["DISTILL.UNLABELED.RATIO", "0.5", "DISTILL.TEACHER.OPTS", "['TEST.DETECTIONS_PER_IMAGE', '5']"]
    cfg = distill_cfg(config, [name], teacher_weights=weights,
                      opts=["DISTILL.DETECTION_LOSSES", str(detection_losses)] + opts)
    model = build_model(cfg).train()
    inputs = fake_batch()
    for i in unlabeled:
        del inputs[i]["instances"]
    losses = _losses(model, inputs)
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


@pytest.mark.parametrize("side", ["student", "teacher"])
def test_unverified_class_order_is_an_error_unless_allowed(tmp_path, side):
    """Same NUM_CLASSES but no class names on one side: the order cannot be proven."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

    name = "pages_without_class_names"
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, "/nonexistent/pages.json", "/nonexistent")
    unnamed = ["DATASETS.TRAIN", f"('{name}',)"]
    config = write_config(str(tmp_path / "t.yaml"), TINY, unnamed if side == "teacher" else [])
    student = unnamed if side == "student" else []
    with pytest.raises(ValueError, match=rf"Cannot verify .*{side}: no thing_classes for \['{name}'\].*ALLOW_UNVERIFIED"):
        build_model(distill_cfg(config, ["fitnet"], opts=student))
    build_model(distill_cfg(config, ["fitnet"], opts=student + ["DISTILL.TEACHER.ALLOW_UNVERIFIED_CLASSES", "True"]))


def test_class_order_of_a_register_coco_instances_dataset_is_read_from_its_json(tmp_path):
    """Detectron2's register_coco_instances sets thing_classes only when the dataset is loaded: the
    names come from the JSON's categories, in id order, so its order is checked, not refused."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    classes = MetadataCatalog.get("synthetic_doclaynet_train").thing_classes
    config = write_config(str(tmp_path / "t.yaml"), TINY, [])
    for name, order in (("coco_pages_same_order", classes), ("coco_pages_swapped", [classes[1], classes[0]] + classes[2:])):
        # Listed in reverse id order in the file: the order is the ids', as load_coco_json gives it.
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(order)][::-1]
        json_file = tmp_path / f"{name}.json"
        json_file.write_text(json.dumps({"images": [], "annotations": [], "categories": categories}))
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_coco_instances(name, {}, str(json_file), str(tmp_path))
        assert MetadataCatalog.get(name).get("thing_classes", None) is None
    build_model(distill_cfg(config, ["fitnet"], opts=["DATASETS.TRAIN", "('coco_pages_same_order',)"]))
    with pytest.raises(ValueError, match=rf"dataset mismatch.*coco_pages_swapped with classes \['{classes[1]}', '{classes[0]}'"):
        build_model(distill_cfg(config, ["fitnet"], opts=["DATASETS.TRAIN", "('coco_pages_swapped',)"]))


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


def test_a_teacher_file_whose_sha256_differs_from_the_recorded_one_is_refused(tmp_path):
    config, weights = _teacher(tmp_path)
    recorded = file_sha256(weights)
    build_model(distill_cfg(config, ["fitnet"], teacher_weights=weights, opts=["DISTILL.TEACHER.SHA256", recorded]))
    retrained = save_random_weights(config, str(tmp_path / "retrained.pth"), seed=1)
    with pytest.raises(TeacherMismatchError, match=rf"retrained.pth have sha256 {file_sha256(retrained)}.*expects {recorded}"):
        build_model(distill_cfg(config, ["fitnet"], teacher_weights=retrained, opts=["DISTILL.TEACHER.SHA256", recorded]))


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


def _capture_ctx(model, name):
    """{"ctx": the DistillContext distiller ``name`` sees} after the next training step."""
    seen, distiller = {}, model.distillers[name]
    original = distiller.forward

    def forward(ctx):
        seen["ctx"] = ctx
        return original(ctx)

    distiller.forward = forward
    return seen


def _teacher_box_branch(roi_heads, features, proposals):
    """The teacher's pooler, box head and predictor on ``proposals`` -> (scores, deltas)."""
    pooled = roi_heads.box_pooler([features[f] for f in roi_heads.box_in_features], [p.proposal_boxes for p in proposals])
    return roi_heads.box_predictor(roi_heads.box_head(pooled))


def test_crosskd_is_the_reference_formula_through_the_teacher_box_branch(tmp_path):
    """jbwang1997/CrossKD (faster-rcnn branch) crosskd_two_stage.py ``bbox_loss_with_kd`` with its
    Faster R-CNN config, transcribed: the teacher's whole box branch on the (adapted) student FPN
    features; KL (class sum) x T^2 / #RoIs x 0.5 at T 3, and the L1 on the teacher's top-class
    deltas weighted by its probability / (4 sum w). Student backbone and adapters get gradients
    through the frozen teacher head; the teacher gets none and stays unchanged."""
    config, weights = _teacher(tmp_path)  # teacher FPN 64, student FPN 32: 1x1-conv adapters
    state = torch.load(weights)
    for name in ("cls_score", "bbox_pred"):  # confident teacher: KL and weights far from uniform
        state["model"][f"roi_heads.box_predictor.{name}.weight"] *= 100
    torch.save(state, weights)
    model = build_model(distill_cfg(config, ["crosskd"], teacher_weights=weights)).train()
    distiller, teacher = model.distillers["crosskd"], model.teacher
    assert set(distiller.adapters) == set(teacher.roi_heads.box_in_features)
    assert all((a.c_in, a.c_out) == (32, 64) for a in distiller.adapters.values())
    seen = _capture_ctx(model, "crosskd")
    losses = _losses(model)
    ctx = seen["ctx"]
    proposals = ctx.s_stages[0].proposals
    feats = {n: a(ctx.s_features[n]) for n, a in distiller.adapters.items()}
    c_scores, c_deltas = _teacher_box_branch(teacher.roi_heads, feats, proposals)
    with torch.no_grad():
        t_scores, t_deltas = _teacher_box_branch(teacher.roi_heads, ctx.t_features, proposals)
    T, K, R = 3.0, 11, c_scores.shape[0]
    kl = torch.nn.functional.kl_div(
        torch.log_softmax(c_scores / T, dim=1), torch.softmax(t_scores / T, dim=1), reduction="none"
    )
    assert losses["loss_kd_crosskd_cls"].item() == pytest.approx(0.5 * (kl.sum(1) * T * T).sum().item() / R, rel=1e-5)
    w, idx = torch.softmax(t_scores, dim=1)[:, :K].max(dim=1)
    idx = idx[:, None, None].repeat(1, 1, 4)
    c4 = c_deltas.reshape(-1, K, 4).gather(1, idx).squeeze(1)
    t4 = t_deltas.reshape(-1, K, 4).gather(1, idx).squeeze(1)
    reg = ((c4 - t4).abs() * w[:, None]).sum() / (w.sum() * 4 + torch.finfo(torch.float32).eps)
    assert losses["loss_kd_crosskd_reg"].item() == pytest.approx(reg.item(), rel=1e-5)

    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    (losses["loss_kd_crosskd_cls"] + losses["loss_kd_crosskd_reg"]).backward()
    student = model.student
    for module in (student.backbone.bottom_up, student.backbone.fpn_output2, distiller.adapters):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert all(p.grad is not None for p in distiller.adapters.parameters())  # (levels without RoIs: 0)
    assert all(p.grad is None for p in student.roi_heads.parameters())  # not the student's box head
    assert all(p.grad is None for p in teacher.parameters())
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    optimizer.zero_grad()
    sum(_losses(model).values()).backward()
    optimizer.step()
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k


def test_crosskd_mask_term_is_the_reference_mask_loss_with_kd(tmp_path, caplog):
    """jbwang1997/CrossKD (faster-rcnn branch) crosskd_two_stage.py ``mask_loss_with_kd`` with its
    Mask R-CNN config, transcribed: the teacher's mask pooler + head on the (adapted) student
    features at the student's foreground RoIs, KDQualityFocalLoss (beta 1) to the teacher's own
    mask logits over every class channel and cell, summed / the number of sampled RoIs. It is on by
    default for mask students and teachers; gradients reach the student backbone and the adapters
    (not the student's mask head, not the teacher); MASK_WEIGHT 0 or a maskless teacher: box terms only."""
    config, weights = _teacher(tmp_path)
    model = build_model(distill_cfg(config, ["crosskd"], teacher_weights=weights)).train()
    distiller, teacher = model.distillers["crosskd"], model.teacher
    assert distiller.needs_masks and model.needs_masks
    seen = _capture_ctx(model, "crosskd")
    losses = _losses(model)
    ctx = seen["ctx"]
    fg = ctx.s_mask.proposals
    assert sum(len(p) for p in fg) > 0
    feats = {n: a(ctx.s_features[n]) for n, a in distiller.adapters.items()}
    heads = teacher.roi_heads

    def mask_branch(features):
        pooled = heads.mask_pooler([features[f] for f in heads.mask_in_features], [p.proposal_boxes for p in fg])
        return heads.mask_head.layers(pooled)

    c = mask_branch(feats)
    with torch.no_grad():
        t = mask_branch(ctx.t_features)
    assert c.shape[1] == 11  # every class channel, not the ground-truth class only
    q = torch.sigmoid(t)
    qfl = torch.nn.functional.binary_cross_entropy_with_logits(c, q, reduction="none") * (torch.sigmoid(c) - q).abs()
    num_rois = ctx.s_stages[0].scores.shape[0]
    assert num_rois > sum(len(p) for p in fg)  # divided by all sampled RoIs, not the foreground ones
    ref = qfl.sum() / (num_rois + torch.finfo(torch.float32).eps)
    assert losses["loss_kd_crosskd_mask"].item() == pytest.approx(ref.item(), rel=1e-5)
    losses["loss_kd_crosskd_mask"].backward()
    student = model.student
    for module in (student.backbone.bottom_up, distiller.adapters):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert all(p.grad is None for p in student.roi_heads.parameters())
    assert all(p.grad is None for p in teacher.parameters())

    off = build_model(distill_cfg(config, ["crosskd"], teacher_weights=weights,
                                  opts=["DISTILL.CROSSKD.MASK_WEIGHT", "0.0"])).train()
    assert not off.needs_masks
    assert sorted(_kd_losses(_losses(off))) == ["loss_kd_crosskd_cls", "loss_kd_crosskd_reg"]
    box_teacher, box_weights = _teacher(tmp_path, name="box_teacher",
                                        opts=("MODEL.FPN.OUT_CHANNELS", "64", "MODEL.MASK_ON", "False"))
    with caplog.at_level("WARNING"):
        maskless = build_model(distill_cfg(box_teacher, ["crosskd"], teacher_weights=box_weights)).train()
    assert "the teacher none; CrossKD's mask term is off" in caplog.text
    assert sorted(_kd_losses(_losses(maskless))) == ["loss_kd_crosskd_cls", "loss_kd_crosskd_reg"]


def test_crosskd_cascade_runs_each_teacher_stage_on_that_stages_rois(tmp_path):
    config, weights = _teacher(tmp_path, TINY_CASCADE)
    model = build_model(distill_cfg(config, ["crosskd"], base=TINY_CASCADE, teacher_weights=weights)).train()
    calls = []
    for k, head in enumerate(model.teacher.roi_heads.box_head):
        original = head.forward

        def record(x, _k=k, _original=original):
            calls.append((_k, x.requires_grad, x.shape[0]))
            return _original(x)

        head.forward = record
    seen = _capture_ctx(model, "crosskd")
    kd = _kd_losses(_losses(model))
    # (the mask term once, on the last stage's foreground RoIs, as Detectron2's cascade mask head)
    assert sorted(kd) == sorted([f"loss_kd_crosskd_{p}_stage{k}" for p in ("cls", "reg") for k in range(3)]
                                + ["loss_kd_crosskd_mask"])
    rois = [len(torch.cat([p.proposal_boxes.tensor for p in s.proposals])) for s in seen["ctx"].s_stages]
    # the teacher's own answer (no grad), then per stage the cross pass on the student's features
    assert calls == [(k, False, rois[k]) for k in range(3)] + [(k, True, rois[k]) for k in range(3)]
    # each stage's gradient into the student features is scaled by 1/3, as Detectron2's Cascade
    ctx, distiller, p2 = seen["ctx"], model.distillers["crosskd"], seen["ctx"].s_features["p2"]
    unscaled = ctx.teacher_box_answer({n: a(ctx.s_features[n]) for n, a in distiller.adapters.items()}, 1)
    ref = 0.5 * kd_loss(unscaled.scores, ctx.t_stages[1].scores, 3.0)
    (g,) = torch.autograd.grad(kd["loss_kd_crosskd_cls_stage1"], p2, retain_graph=True)
    (g_ref,) = torch.autograd.grad(ref, p2)
    assert g.abs().sum() > 0 and torch.allclose(g, g_ref / 3, atol=1e-12, rtol=1e-4)


def test_cascade_teacher_average_is_in_probability_space(tmp_path):
    """``CASCADE_TEACHER_STAGE average``: the mean of the stages' softmax probabilities, as
    Detectron2's CascadeROIHeads inference averages ``predict_probs``; the KD target is its log.
    CrossKD's cross pass goes through the same stages."""
    from dla_kd.modeling.meta_arch.roi_outputs import teacher_box_outputs

    config, weights = _teacher(tmp_path, TINY_CASCADE)
    cfg = distill_cfg(config, ["logit_kd", "crosskd"], teacher_weights=weights,
                      opts=["DISTILL.ROI.CASCADE_TEACHER_STAGE", "average"])
    model = build_model(cfg).train()
    seen = _capture_ctx(model, "logit_kd")
    _losses(model)
    ctx, heads = seen["ctx"], model.teacher.roi_heads
    proposals = ctx.s_stages[0].proposals
    with torch.no_grad():
        runs = [teacher_box_outputs(heads, ctx.t_features, proposals, k) for k in range(3)]
    probs = [torch.cat(r.predictor.predict_probs((r.scores, r.deltas), proposals)) for r in runs]
    mean_probs = sum(probs) / 3
    t = ctx.t_stages[0]
    assert torch.allclose(torch.softmax(t.scores, dim=1), mean_probs, atol=1e-6)
    assert torch.allclose(t.scores, mean_probs.log(), atol=1e-5)
    assert not torch.allclose(t.scores, torch.stack([r.scores for r in runs]).mean(0), atol=1e-3)
    assert torch.equal(t.deltas, runs[-1].deltas)  # deltas of the last stage, never averaged
    cross = ctx.teacher_box_answer({n: f.detach() for n, f in ctx.t_features.items()}, 0)
    assert torch.allclose(cross.scores, t.scores, atol=1e-5)  # same stages, same combination


def test_box_kd_l1_is_detectron2_box_reg_loss_to_the_teacher_boxes(tmp_path):
    """BOX_KD LOSS "l1", CLASS "gt" = Detectron2's own L1 ``box_reg_loss`` (fast_rcnn.py) with the
    teacher's boxes for the GT class as targets: deltas, summed over fg RoIs / all sampled RoIs."""
    config, weights = _teacher(tmp_path)
    model = build_model(distill_cfg(config, ["box_kd"], teacher_weights=weights)).train()
    seen = _capture_ctx(model, "box_kd")
    loss = _losses(model)["loss_kd_box_kd"]
    s, t = seen["ctx"].s_stages[0], seen["ctx"].t_stages[0]
    assert (s.predictor.box_reg_loss_type, s.predictor.smooth_l1_beta) == ("smooth_l1", 0.0)  # = L1
    gt = torch.cat([p.gt_classes for p in s.proposals])
    assert 0 < int((gt < 11).sum()) < len(gt)
    t_boxes = torch.cat(t.predictor.predict_boxes_for_gt_classes((t.scores, t.deltas), s.proposals))
    boxes = torch.cat([p.proposal_boxes.tensor for p in s.proposals])
    ref = s.predictor.box_reg_loss(boxes, t_boxes, s.deltas, gt)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
