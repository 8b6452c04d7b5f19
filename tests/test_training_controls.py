"""KD training controls: weight schedules, teacher feature cache, teacher sanity check, teacher dtype,
VIS_PERIOD, and a zero-weight distillation run reproducing the plain run of the same seed."""
import json
import math
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage

import dla_kd  # noqa: F401
from dla_kd.distill import LossWeightSchedule
from dla_kd.distill.feature_cache import FeatureCacheMismatchError, TeacherFeatureCache, image_key
from dla_kd.engine import Trainer, load_config
from dla_kd.engine.teacher_check import TeacherAtChanceError
from tiny_models import MICRO, TINY, distill_cfg, fake_batch, write_config


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


def test_kd_schedules_scale_with_the_world_size(use_synthetic_root, tmp_path):
    """SOLVER.REFERENCE_WORLD_SIZE 2 on 1 process: MAX_ITER and every KD schedule iteration
    double (-1 stays -1), and the model's schedules are built from the scaled values."""
    from dla_kd.engine.auto_scale import auto_scale_workers

    teacher = write_config(str(tmp_path / "t.yaml"))
    cfg = distill_cfg(teacher, ["fitnet"], opts=[
        "SOLVER.REFERENCE_WORLD_SIZE", "2", "SOLVER.MAX_ITER", "100", "OUTPUT_DIR", str(tmp_path / "out"),
        "DISTILL.FITNET.SCHEDULE.WARMUP_ITERS", "10", "DISTILL.FITNET.SCHEDULE.DECAY", "linear",
        "DISTILL.FITNET.SCHEDULE.DECAY_END_ITER", "80", "DISTILL.FITNET.SCHEDULE.STOP_ITER", "90"])
    assert Trainer.auto_scale_workers is auto_scale_workers and auto_scale_workers(cfg, 2) is cfg
    trainer = Trainer(cfg)
    scaled = trainer.cfg
    assert scaled.SOLVER.MAX_ITER == 200 and scaled.is_frozen()
    fit = scaled.DISTILL.FITNET.SCHEDULE
    assert (fit.WARMUP_ITERS, fit.DECAY_END_ITER, fit.STOP_ITER) == (20, 160, 180)
    pkd = scaled.DISTILL.PKD.SCHEDULE
    assert (pkd.WARMUP_ITERS, pkd.DECAY_END_ITER, pkd.STOP_ITER) == (0, -1, -1)
    schedule = trainer._trainer.model.schedules["fitnet"]
    assert (schedule.warmup_iters, schedule.decay_end_iter, schedule.stop_iter) == (20, 160, 180)
    assert cfg.DISTILL.FITNET.SCHEDULE.WARMUP_ITERS == 10  # the given config is left alone


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
    torch.manual_seed(0)  # the same SEED: the same MGD mask stream
    live = build_model(distill_cfg(config, losses, teacher_weights=weights)).train()
    torch.manual_seed(0)
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
    assert len(files) == 2
    # One sub-folder per set of levels (fitnet p2..p6 + the teacher box head's p2..p5).
    assert os.listdir(cache_dir) == ["p2-p3-p4-p5-p6"]
    assert os.path.isfile(os.path.join(cache_dir, "p2-p3-p4-p5-p6", "cache_meta.json"))
    # A run that reads other levels shares DIR without a signature clash.
    build_model(distill_cfg(config, ["pkd"], teacher_weights=weights, opts=[
        "DISTILL.TEACHER.FEATURE_CACHE.DIR", cache_dir, "DISTILL.TEACHER.FEATURE_CACHE.DTYPE", "float32"]))
    assert sorted(os.listdir(cache_dir)) == ["p2-p3-p4-p5", "p2-p3-p4-p5-p6"]

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


def test_feature_cache_keys_the_file_not_its_spelling_and_misses_a_rewritten_one(tmp_path, monkeypatch):
    """The same page read as a relative path, an absolute one and through a symlinked folder (a
    copy of the checkout with datasets linked, an offline pseudo-label file listing absolute paths)
    is one entry; a page rewritten under its name is computed anew."""
    pages = tmp_path / "data" / "pages"
    pages.mkdir(parents=True)
    (pages / "a.png").write_bytes(b"page a")
    (tmp_path / "checkout").mkdir()
    (tmp_path / "checkout" / "datasets").symlink_to(tmp_path / "data")
    monkeypatch.chdir(tmp_path / "checkout")
    cache = TeacherFeatureCache(str(tmp_path / "cache"), ["p2"], {"teacher": 1}, dtype="float32")
    image = torch.zeros(3, 8, 8)
    calls = []

    def compute(images):
        calls.append(len(images))
        return [{"p2": torch.full((2, 2, 2), float(len(calls)))} for _ in images]

    spellings = ["datasets/pages/a.png", str(pages / "a.png"), str(tmp_path / "checkout/datasets/pages/../pages/a.png")]
    read = [cache.features([{"file_name": name}], [image], compute)[0]["p2"] for name in spellings]
    assert calls == [1] and all(torch.equal(r, read[0]) for r in read)
    assert len([f for _, _, fs in os.walk(cache.directory) for f in fs if f.endswith(".pt")]) == 1
    # Another input size of the same page is another entry.
    cache.features([{"file_name": spellings[0]}], [torch.zeros(3, 8, 16)], compute)
    assert calls == [1, 1]
    # Rewritten under the same name (size and modification time change): computed again, not read stale.
    (pages / "a.png").write_bytes(b"page a, drawn again")
    os.utime(pages / "a.png", ns=(1, 1))
    fresh = cache.features([{"file_name": spellings[1]}], [image], compute)[0]["p2"]
    assert calls == [1, 1, 1] and float(fresh[0, 0, 0]) == 3.0
    # A name that is no file is keyed as spelled.
    assert image_key("no/such.png", (8, 8)) != image_key("./no/such.png", (8, 8))


def test_feature_cache_refuses_another_teacher_and_random_inputs(tmp_path):
    config, weights = _teacher_files(tmp_path)
    cache = ["DISTILL.TEACHER.FEATURE_CACHE.DIR", str(tmp_path / "cache")]
    build_model(distill_cfg(config, ["fitnet"], teacher_weights=weights, opts=cache))
    # The same weights copied elsewhere (another checkout, a relative path from another working
    # directory) are the same teacher: the cache is kept.
    os.makedirs(tmp_path / "elsewhere")
    copy = str(tmp_path / "elsewhere" / "teacher.pth")
    with open(weights, "rb") as src, open(copy, "wb") as dst:
        dst.write(src.read())
    build_model(distill_cfg(config, ["fitnet"], teacher_weights=copy, opts=cache))
    _, other = _teacher_files(tmp_path, seed=1)
    with pytest.raises(FeatureCacheMismatchError, match="teacher_weights"):
        build_model(distill_cfg(config, ["fitnet"], teacher_weights=other, opts=cache))
    # What does not change a teacher feature keeps the cache (the teacher config's schedule, a
    # DISTILL key a later release adds: the teacher's config is loaded with every default); its
    # model, input format or compute dtype do not.
    teacher_opts = ["DISTILL.TEACHER.OPTS", "['SOLVER.BASE_LR', '0.5', 'DISTILL.CROSSKD.MASK_WEIGHT', '0.3']"]
    build_model(distill_cfg(config, ["fitnet"], teacher_weights=weights, opts=cache + teacher_opts))
    for opts, key in ((["DISTILL.TEACHER.OPTS", "['MODEL.PIXEL_STD', '[1.0, 2.0, 3.0]']"], "teacher_model_sha1"),
                      (["DISTILL.TEACHER.OPTS", "['INPUT.FORMAT', 'RGB']"], "teacher_input_format"),
                      (["DISTILL.TEACHER.DTYPE", "bfloat16"], "teacher_dtype")):
        with pytest.raises(FeatureCacheMismatchError, match=key):
            build_model(distill_cfg(config, ["fitnet"], teacher_weights=weights, opts=cache + opts))
    with pytest.raises(ValueError, match="INPUT.MIN_SIZE_TRAIN .* picks a random size"):
        build_model(distill_cfg(config, ["fitnet"], teacher_weights=weights,
                                opts=cache + ["INPUT.MIN_SIZE_TRAIN", "(96, 128)"]))


def test_feature_cache_is_exact_for_pages_of_different_sizes(tmp_path):
    """GN teacher, two pages of different width in one batch: the teacher runs per image in both
    paths and the losses compare only the pages' cells, so cached == live for every loss."""
    config, weights = _teacher_files(tmp_path)
    losses = ["fitnet", "pkd", "cwd", "defeat", "fgd", "mgd", "reviewkd", "logit_kd", "mask_kd"]
    torch.manual_seed(0)  # the same SEED: the same MGD mask stream
    live = build_model(distill_cfg(config, losses, teacher_weights=weights)).train()
    torch.manual_seed(0)
    cached = build_model(distill_cfg(config, losses, teacher_weights=weights, opts=[
        "DISTILL.TEACHER.FEATURE_CACHE.DIR", str(tmp_path / "cache"), "DISTILL.TEACHER.FEATURE_CACHE.DTYPE", "float32"]))
    cached.train().load_state_dict(live.state_dict())
    narrow = fake_batch(1, 128, 96, seed=2)
    batch = _with_files(fake_batch(1, 128, 160, seed=1) + narrow)
    results = []
    for model in (live, cached, cached):  # live, cache written, cache read back
        torch.manual_seed(0)
        with EventStorage(0):
            results.append({k: float(v) for k, v in model(batch).items() if k.startswith("loss_kd_")})
    assert len(results[0]) >= len(losses)
    for k, value in results[0].items():
        assert results[1][k] == pytest.approx(value, rel=1e-6, abs=1e-12), k
        assert results[2][k] == results[1][k], k

    # A page's teacher targets do not depend on the page it is batched with.
    alone = live._teacher_features(narrow, live._preprocess(narrow)[1])
    paired = live._teacher_features(batch, live._preprocess(batch)[1])
    for k, v in alone.items():
        h, w = v.shape[-2:]
        assert torch.equal(paired[k][1:, :, :h, :w], v), k


def test_float32_teacher_is_not_autocast(tmp_path):
    """DISTILL.TEACHER.DTYPE float32 (and every CPU teacher) computes in float32 although the
    trainer's autocast (SOLVER.AMP.ENABLED) covers the whole forward."""
    config, weights = _teacher_files(tmp_path)
    model = build_model(distill_cfg(config, ["fitnet", "logit_kd"], teacher_weights=weights)).train()
    dtypes = {}

    def record(name):
        def hook(module, inputs, output):
            values = output.values() if isinstance(output, dict) else output
            dtypes[name] = {v.dtype for v in values}

        return hook

    for name, module in (("teacher backbone", model.teacher.backbone),
                         ("teacher box predictor", model.teacher.roi_heads.box_predictor),
                         ("student box predictor", model.student.roi_heads.box_predictor)):
        module.register_forward_hook(record(name))
    with EventStorage(0), torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(fake_batch())
    assert dtypes["student box predictor"] == {torch.bfloat16}  # the autocast is on
    assert dtypes["teacher backbone"] == {torch.float32}
    assert dtypes["teacher box predictor"] == {torch.float32}
    assert all(math.isfinite(float(v)) for v in losses.values())


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


def test_vis_period_shows_the_students_proposals(tmp_path):
    """VIS_PERIOD is honoured as by GeneralizedRCNN: every VIS_PERIOD iterations the same images
    (GT boxes and proposals, mask predictions) as the student alone puts in the event storage."""
    config, weights = _teacher_files(tmp_path)
    cfg = distill_cfg(config, ["fitnet"], teacher_weights=weights, opts=["VIS_PERIOD", "2"])
    model = build_model(cfg).train()
    for it, expected in ((0, 1), (1, 0), (2, 1)):
        names = {}
        for side, m in (("distill", model), ("plain", model.student)):
            with EventStorage(it) as storage:
                m(fake_batch())
            names[side] = [name for name, _, _ in storage._vis_data]
        assert names["distill"] == names["plain"], it
        assert sum("Predicted proposals" in n for n in names["plain"]) == expected, it


def _run(cfg, seed: int):
    """Build a Trainer as tools/train_net.py does after default_setup seeded every RNG, train it;
    -> (initial student weights, file names of each batch, detection losses of each step)."""
    seed_all_rng(seed)
    trainer = Trainer(cfg)
    model = trainer._trainer.model
    initial = {k: v.clone() for k, v in getattr(model, "student", model).state_dict().items()}
    files, forward = [], model.forward

    def record(batch):
        files.append([x["file_name"] for x in batch])
        return forward(batch)

    model.forward = record
    trainer.resume_or_load(resume=False)
    trainer.train()
    histories = trainer.storage.histories()
    losses = {k: [v for v, _ in h.values()] for k, h in histories.items() if k.startswith("loss_") and "_kd_" not in k}
    return initial, files, losses


def test_zero_weight_distillation_reproduces_the_plain_run(use_synthetic_root, tmp_path):
    """Same SEED, every KD weight 0: teacher, adapters and the teacher sanity check draw from
    forked RNG streams and MGD's masks from their own, so the student starts from the plain run's
    weights, sees the same batches and has the same losses."""
    config = write_config(str(tmp_path / "teacher.yaml"), TINY, ["MODEL.FPN.OUT_CHANNELS", "64"])
    common = ["SEED", "7", "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2", "DATASETS.TEST", "()"]
    plain = load_config(TINY, MICRO + common + ["OUTPUT_DIR", str(tmp_path / "plain")])
    kd = distill_cfg(config, ["fitnet", "logit_kd", "mgd"], opts=common + [  # random-init teacher: built on the fork
        "OUTPUT_DIR", str(tmp_path / "kd"), "DISTILL.FITNET.WEIGHT", "0.0", "DISTILL.LOGIT_KD.WEIGHT", "0.0",
        "DISTILL.MGD.WEIGHT", "0.0",  # MGD's random masks come from its own stream
        "DISTILL.TEACHER.SANITY_CHECK.ENABLED", "True", "DISTILL.TEACHER.SANITY_CHECK.NUM_IMAGES", "2",
        "DISTILL.TEACHER.SANITY_CHECK.DATASET", "synthetic_doclaynet_val", "DISTILL.TEACHER.SANITY_CHECK.MIN_AP", "-1.0"])
    plain_init, plain_files, plain_losses = _run(plain, seed=7)
    kd_init, kd_files, kd_losses = _run(kd, seed=7)
    assert os.path.isfile(tmp_path / "kd" / "teacher_sanity_check.json")
    assert kd_init.keys() == plain_init.keys()
    assert all(torch.equal(kd_init[k], v) for k, v in plain_init.items())
    assert kd_files == plain_files and len(plain_files) == 3
    assert kd_losses.keys() == plain_losses.keys() and "loss_cls" in plain_losses
    for k, values in plain_losses.items():
        assert kd_losses[k] == values, k


def test_mgd_masks_follow_the_iteration_not_the_global_rng(tmp_path):
    """MGD's masks at an iteration are the same whatever the global RNG has drawn (so the student's
    RoI sampling is the plain run's) and after --resume (seeded from the iteration); they change
    from one iteration to the next."""
    config, weights = _teacher_files(tmp_path)
    mgd = build_model(distill_cfg(config, ["mgd"], teacher_weights=weights)).distillers["mgd"]

    def draw(iteration, global_seed):
        torch.manual_seed(global_seed)
        with EventStorage(iteration):
            return torch.rand(64, generator=mgd.mask_generator())

    assert torch.equal(draw(5, 0), draw(5, 1))
    assert not torch.equal(draw(5, 0), draw(6, 0))


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
