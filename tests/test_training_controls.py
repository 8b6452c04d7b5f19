"""KD training controls: weight schedules, teacher feature cache, teacher sanity check, teacher dtype."""
import contextlib
import json
import math
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

import dla_kd  # noqa: F401
from dla_kd.distill import LossWeightSchedule
from dla_kd.distill.feature_cache import FeatureCacheMismatchError
from dla_kd.engine import Trainer
from dla_kd.engine.teacher_check import TeacherAtChanceError
from dla_kd.modeling.meta_arch.teacher import teacher_precision
from tiny_models import TINY, distill_cfg, fake_batch, write_config


def test_schedules_match_hand_values():
    warm = LossWeightSchedule(warmup_iters=4)
    assert [warm(i) for i in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    lin = LossWeightSchedule(warmup_iters=0, decay="linear", max_iter=10, final_factor=0.2)
    assert lin(0) == 1.0 and lin(5) == pytest.approx(1 - 0.8 * 0.5) and lin(10) == pytest.approx(0.2)
    cos = LossWeightSchedule(warmup_iters=2, decay="cosine", decay_end_iter=12)
    assert cos(0) == 0.5 and cos(2) == 1.0
    assert cos(7) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cos(12) == pytest.approx(0.0) and cos(50) == pytest.approx(0.0)
    stop = LossWeightSchedule(stop_iter=3)
    assert [stop(i) for i in range(5)] == [1.0, 1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="Unknown KD weight decay 'exp'"):
        LossWeightSchedule(decay="exp")
    with pytest.raises(ValueError, match="not after the warm-up"):
        LossWeightSchedule(warmup_iters=10, decay="linear", max_iter=5)


def test_schedule_weight_is_applied_and_logged(tmp_path):
    teacher = write_config(str(tmp_path / "t.yaml"))
    cfg = distill_cfg(teacher, ["fitnet"], opts=["DISTILL.FITNET.SCHEDULE.WARMUP_ITERS", "4", "DISTILL.FITNET.WEIGHT", "2.0"])
    model = build_model(cfg).train()
    batch = fake_batch()
    values = {}
    for it in (0, 3):
        torch.manual_seed(0)
        with EventStorage(it) as storage:
            values[it] = float(model(batch)["loss_kd_fitnet"])
            assert storage.latest()["kd_weight/fitnet"][0] == pytest.approx(2.0 * (it + 1) / 4)
    assert values[0] == pytest.approx(values[3] / 4, rel=1e-5)


def _teacher_files(tmp_path, seed=0, name="teacher"):
    config = write_config(str(tmp_path / f"{name}.yaml"), TINY, ["MODEL.FPN.OUT_CHANNELS", "64"])
    torch.manual_seed(seed)
    weights = str(tmp_path / f"{name}_{seed}.pth")
    torch.save({"model": build_model(dla_kd.engine.load_config(config)).state_dict()}, weights)
    return config, weights


def _with_files(batch):
    for i, item in enumerate(batch):
        item["file_name"] = f"/pages/page{i}.png"
    return batch


def test_feature_cache_is_exact_and_skips_the_teacher(tmp_path):
    config, weights = _teacher_files(tmp_path)
    cache_dir = str(tmp_path / "cache")
    losses = ["fitnet", "logit_kd"]
    live = build_model(distill_cfg(config, losses, teacher_weights=weights)).train()
    cached = build_model(distill_cfg(config, losses, teacher_weights=weights, opts=[
        "DISTILL.TEACHER.FEATURE_CACHE.DIR", cache_dir, "DISTILL.TEACHER.FEATURE_CACHE.DTYPE", "float32"])).train()
    cached.load_state_dict(live.state_dict())
    batch = _with_files(fake_batch())
    torch.manual_seed(0)
    with EventStorage(0):
        reference = live(batch)
    torch.manual_seed(0)
    with EventStorage(0):
        first = cached(batch)
    files = [f for _, _, fs in os.walk(cache_dir) for f in fs if f.endswith(".pt")]
    assert len(files) == 2 and os.path.isfile(os.path.join(cache_dir, "cache_meta.json"))

    def fail(*args, **kwargs):
        raise AssertionError("the teacher backbone ran although its features are cached")

    cached.teacher.backbone.forward = fail
    torch.manual_seed(0)
    with EventStorage(0):
        second = cached(batch)
    for k in ("loss_kd_fitnet", "loss_kd_logit_kd"):
        assert float(second[k]) == float(first[k])  # read back exactly what was computed
        # Per-image vs batched convolutions differ only by float rounding.
        assert float(first[k]) == pytest.approx(float(reference[k]), rel=1e-4)


def test_feature_cache_refuses_another_teacher_and_random_inputs(tmp_path):
    config, weights = _teacher_files(tmp_path)
    cache = ["DISTILL.TEACHER.FEATURE_CACHE.DIR", str(tmp_path / "cache")]
    build_model(distill_cfg(config, ["fitnet"], teacher_weights=weights, opts=cache))
    _, other = _teacher_files(tmp_path, seed=1)
    with pytest.raises(FeatureCacheMismatchError, match="teacher_weights"):
        build_model(distill_cfg(config, ["fitnet"], teacher_weights=other, opts=cache))
    with pytest.raises(ValueError, match="INPUT.MIN_SIZE_TRAIN .* picks a random size"):
        build_model(distill_cfg(config, ["fitnet"], teacher_weights=weights,
                                opts=cache + ["INPUT.MIN_SIZE_TRAIN", "(96, 128)"]))


def test_teacher_dtype_is_fp32_on_cpu():
    assert isinstance(teacher_precision(torch.device("cpu"), "bfloat16"), contextlib.nullcontext)
    assert isinstance(teacher_precision(torch.device("cpu"), "float32"), contextlib.nullcontext)
    assert isinstance(teacher_precision(torch.device("cuda"), "bfloat16"), torch.autocast)


def test_teacher_sanity_check_stops_a_teacher_at_chance(use_synthetic_root, tmp_path):
    config, weights = _teacher_files(tmp_path)
    opts = ["DISTILL.TEACHER.SANITY_CHECK.ENABLED", "True", "DISTILL.TEACHER.SANITY_CHECK.NUM_IMAGES", "2",
            "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "2", "OUTPUT_DIR", str(tmp_path / "out")]
    trainer = Trainer(distill_cfg(config, ["fitnet"], teacher_weights=weights, opts=opts))
    trainer.resume_or_load(resume=False)
    with pytest.raises(TeacherAtChanceError, match="is at chance|at chance"):
        trainer.train()
    report = json.load(open(tmp_path / "out" / "teacher_sanity_check.json"))
    assert report["num_images"] == 2 and report["bbox_AP"] < 1.0

    # The same random teacher passes when the threshold allows it, and training proceeds.
    trainer = Trainer(distill_cfg(config, ["fitnet"], teacher_weights=weights,
                                  opts=opts + ["DISTILL.TEACHER.SANITY_CHECK.MIN_AP", "-1.0", "TEST.EVAL_PERIOD", "0"]))
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert os.path.isfile(tmp_path / "out" / "model_final.pth")


def test_optimizer_choice(tmp_path):
    from dla_kd.engine.optimizer import build_optimizer

    cfg = dla_kd.engine.load_config(TINY, ["MODEL.DEVICE", "cpu", "SOLVER.OPTIMIZER", "AdamW",
                                           "SOLVER.BETAS", "(0.9, 0.98)", "SOLVER.WEIGHT_DECAY", "0.05"])
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["weight_decay"] == 0.05
    n_params = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    sgd = build_optimizer(dla_kd.engine.load_config(TINY, ["MODEL.DEVICE", "cpu"]), model)
    assert isinstance(sgd, torch.optim.SGD)
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER must be one of"):
        build_optimizer(dla_kd.engine.load_config(TINY, ["MODEL.DEVICE", "cpu", "SOLVER.OPTIMIZER", "Lion"]), model)
