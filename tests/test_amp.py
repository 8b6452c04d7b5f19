"""Ready for GPUs, checked on the CPU: masks and losses right under float16 /
bfloat16 student features, DISTILL.BALANCE on scaled gradients (also across two gloo processes),
no host syncs in a distillation step, the teacher's precision on a (faked) CUDA device.
What only a GPU can show is listed in docs/training_on_gpus.md."""
import collections
import json
import linecache
import logging
import math
import os
import sys
from types import SimpleNamespace

import detectron2
import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import dla_kd  # noqa: F401
from dla_kd.config import get_dla_kd_cfg
from dla_kd.distill import DISTILLER_REGISTRY
from dla_kd.distill.balance import DEFAULT_AMP_SCALE, LossBalancer, attach_grad_scaler, scaled_grad_norm
from dla_kd.distill.base import DistillContext
from dla_kd.distill.losses import (
    box_delta_l2_loss,
    box_giou_loss,
    box_l1_loss,
    box_masks,
    crosskd_box_loss,
    cwd_loss,
    decoupled_mean,
    defeat_feature_loss,
    defeat_box_levels,
    defeat_fg_masks,
    fitnet_loss,
    hcl_loss,
    image_extents,
    kd_loss,
    kd_quality_focal_loss,
    logit_mse_loss,
    mask_logit_kd_loss,
    pkd_loss,
    standardize_per_channel,
    valid_cells,
    valid_extents,
)
from dla_kd.modeling.meta_arch import teacher as teacher_module
from tiny_models import REPO, TINY, distill_cfg, fake_batch, write_config

LOW = [torch.float16, torch.bfloat16]
pytestmark = pytest.mark.usefixtures("one_thread")


# ---- 1. masks and weight maps in float32; every loss equal to float32 ---------------------------

def _ctx(s_features, boxes, image_shape, image_sizes=None, t_features=None):
    instances = []
    for b in boxes:
        inst = Instances(image_shape)
        inst.gt_boxes = Boxes(torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4))
        instances.append(inst)
    t_features = t_features or {k: torch.zeros_like(v, dtype=torch.float32) for k, v in s_features.items()}
    return DistillContext(s_features=s_features, t_features=t_features, gt_instances=instances,
                          image_shape=image_shape, image_sizes=image_sizes)


@pytest.mark.parametrize("dtype", LOW)
def test_a_large_box_stays_foreground_with_low_precision_features(dtype):
    """A page-sized box: one 1000 x 1300 px box on a 1344 x 1024 page covers 251 x 326 = 81,826 p2
    cells; with float16 maps its area was inf, its weight 0, and it counted as background."""
    box = [[10.0, 10.0, 1010.0, 1310.0]]
    maps = {}
    for dt in (torch.float32, dtype):
        maps[dt] = _ctx({"p2": torch.zeros(1, 2, 336, 256, dtype=dt)}, [box], (1344, 1024)).gt_box_masks("p2", 4)
    low, ref = maps[dtype], maps[torch.float32]
    assert int(low.fg_mask.sum()) == 81_826 == int(ref.fg_mask.sum())
    assert low.fg_weight.dtype == low.bg_weight.dtype == torch.float32
    assert torch.equal(low.fg_weight, ref.fg_weight) and torch.equal(low.bg_weight, ref.bg_weight)
    assert float(low.fg_weight.sum()) == pytest.approx(1.0, rel=1e-5)  # 81,826 x 1 / 81,826
    assert float(low.bg_weight.sum()) == pytest.approx(1.0, rel=1e-5)


def test_defeat_masks_with_keep_equal_the_per_level_subsets():
    """DeFeat's per-level masks (every box, masked by its level) equal the former construction
    from the boxes of each level alone (boolean indexing per image and level)."""
    g = torch.Generator().manual_seed(3)
    image_hw = (512, 640)
    boxes = []
    for count in (9, 0, 14):
        size = torch.exp(torch.rand(count, 2, generator=g) * math.log(500.0 / 6)) * 6
        xy = torch.rand(count, 2, generator=g) * (torch.tensor([640.0, 512.0]) - size)
        boxes.append(torch.cat([xy, xy + size], dim=1))
    strides = [4, 8, 16, 32, 64]
    hws = [(math.ceil(512 / s), math.ceil(640 / s)) for s in strides]
    masks = defeat_fg_masks(boxes, image_hw, hws, strides)
    for k, (hw, stride) in enumerate(zip(hws, strides)):
        subset = [b[defeat_box_levels(b, len(strides)) == k] for b in boxes]
        expected = box_masks(subset, image_hw, hw, stride, cell_rule="defeat").fg_mask
        assert torch.equal(masks[k], expected), k
    assert sum(int(m.sum()) for m in masks) > 0


def _pair(shape, dtype, scale=300.0, seed=0):
    """(student in ``dtype`` requiring grad, the same values in float32, float32 teacher). Scale
    300: squares reach 1e5, beyond float16's 65,504, as FPN features of real detectors can."""
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(shape, generator=g) * scale).to(dtype)
    t = torch.randn(shape, generator=g) * scale
    return s.clone().requires_grad_(True), s.float().requires_grad_(True), t


def _valid(n=2, hw=(7, 9), stride=4):
    return valid_cells([(28, 36), (20, 23)][:n], hw, stride)


FEATURE_LOSSES = {
    "fitnet": lambda s, t, v: fitnet_loss(s, t, v),
    "pkd": lambda s, t, v: pkd_loss(s, t, v),
    "cwd": lambda s, t, v: cwd_loss(s, t, 2.0, v),
    "defeat": lambda s, t, v: defeat_feature_loss(s, t, torch.rand(s.shape[0], *s.shape[2:],
                                                                    generator=torch.Generator().manual_seed(1)) > 0.5,
                                                  valid=v),
    "hcl": lambda s, t, v: hcl_loss([s], [t], (4, 2, 1), None if v is None else [v]),
}


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", sorted(FEATURE_LOSSES))
def test_feature_losses_of_low_precision_students_equal_float32(name, masked, dtype):
    """The same student values in float16 / bfloat16 give the float32 loss and gradient: the
    losses compare and reduce in float32 (in float16 these squares overflow)."""
    s_low, s32, t = _pair((2, 6, 7, 9), dtype)
    valid = _valid() if masked else None
    loss_low = FEATURE_LOSSES[name](s_low, t, valid)
    loss_32 = FEATURE_LOSSES[name](s32, t, valid)
    assert loss_low.dtype == torch.float32 and math.isfinite(float(loss_low))
    assert float(loss_low) == pytest.approx(float(loss_32), rel=1e-6)
    loss_low.backward()
    loss_32.backward()
    assert s_low.grad.dtype == dtype and torch.isfinite(s_low.grad.float()).all()
    assert torch.allclose(s_low.grad.float(), s32.grad.to(dtype).float(), rtol=1e-2, atol=1e-6 * float(s32.grad.abs().max()))


def _fpn_model(channels):
    shapes = {f"p{i}": ShapeSpec(channels=channels, stride=2 ** i) for i in range(2, 7)}
    return SimpleNamespace(backbone=SimpleNamespace(output_shape=lambda: dict(shapes)))


FEATURE_DISTILLERS = ["cwd", "defeat", "fgd", "fitnet", "mgd", "pkd", "reviewkd"]
# Module-based losses: the student's convs (adapters, FGD's context blocks, MGD's generation
# block, ReviewKD's fusion) run in the autocast dtype, so the loss follows it within its precision.
AUTOCAST_RTOL = {torch.float16: 5e-3, torch.bfloat16: 3e-2}


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name", FEATURE_DISTILLERS)
def test_feature_distillers_under_autocast_follow_float32(name, dtype):
    """Every registered feature loss (8-channel student, 16-channel teacher: adapters / align
    convs present) on low-precision student features under CPU autocast equals its float32 value
    within the autocast dtype's precision, with finite float32 terms and student gradients."""
    cfg = get_dla_kd_cfg()
    cfg.DISTILL.REVIEWKD.NORM = "GN"
    torch.manual_seed(0)
    distiller = DISTILLER_REGISTRY.get(name)(cfg, _fpn_model(8), _fpn_model(16))
    for p in distiller.parameters():  # DeFeat's adapter starts near zero: make every term count
        if p.dim() > 1:
            nn.init.normal_(p, std=0.2)
    g = torch.Generator().manual_seed(1)
    image_shape, sizes = (128, 160), [(128, 160), (100, 130)]
    s_feats, t_feats = {}, {}
    for i in range(2, 7):
        hw = (math.ceil(128 / 2 ** i), math.ceil(160 / 2 ** i))
        s_feats[f"p{i}"] = torch.randn(2, 8, *hw, generator=g) * 3
        t_feats[f"p{i}"] = torch.randn(2, 16, *hw, generator=g) * 3
    boxes = [[[10, 10, 80, 40], [20, 50, 150, 120]], [[5, 5, 100, 90]]]

    def run(dt, autocast):
        s = {k: v.to(dt).clone().requires_grad_(True) for k, v in s_feats.items()}
        ctx = _ctx(s, boxes, image_shape, sizes, t_feats)
        with torch.autocast("cpu", dtype=dtype, enabled=autocast), EventStorage(0):
            total = sum(distiller(ctx).values())
        total.backward()
        return total, s

    ref, _ = run(torch.float32, False)
    low, s = run(dtype, True)
    assert low.dtype == torch.float32
    assert float(low) == pytest.approx(float(ref), rel=AUTOCAST_RTOL[dtype])
    grads = [v.grad for v in s.values() if v.grad is not None]
    assert grads and all(torch.isfinite(g.float()).all() for g in grads)


RESPONSE_LOSSES = {
    "kd": lambda s, t, fg: kd_loss(s, t, 2.0, fg, 2.0, 0.5),
    "logit_mse": lambda s, t, fg: logit_mse_loss(s, t, fg, 1.0, 3.0),
    "box_l2": lambda s, t, fg: box_delta_l2_loss(s[:, :8], t[:, :8], torch.arange(len(fg)) % 2, 2, fg),
    "box_l1": lambda s, t, fg: box_l1_loss(s[:, :4], t[:, :4], fg),
    "giou": lambda s, t, fg: box_giou_loss(_boxes(s), _boxes(t), fg),
    "crosskd_box": lambda s, t, fg: crosskd_box_loss(s[:, :8], t[:, :8], t[:, 8:11]),
    "mask": lambda s, t, fg: mask_logit_kd_loss(s.reshape(-1, 3, 2, 2), t.reshape(-1, 3, 2, 2), torch.arange(len(fg)) % 3),
    "mask_qfl": lambda s, t, fg: kd_quality_focal_loss(s, t, 7.0),
}


def _boxes(x):
    """(R, >= 4) -> (R, 4) XYXY boxes x1 <= x2, y1 <= y2 (min / max: exact in any dtype)."""
    return torch.stack([torch.minimum(x[:, 0], x[:, 2]), torch.minimum(x[:, 1], x[:, 3]),
                        torch.maximum(x[:, 0], x[:, 2]), torch.maximum(x[:, 1], x[:, 3])], dim=1)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name", sorted(RESPONSE_LOSSES))
def test_response_losses_of_low_precision_students_equal_float32(name, dtype):
    s_low, s32, t = _pair((6, 12), dtype, scale=3.0)
    fg = torch.tensor([True, False, True, True, False, False])
    loss_low, loss_32 = RESPONSE_LOSSES[name](s_low, t, fg), RESPONSE_LOSSES[name](s32, t, fg)
    assert loss_low.dtype == torch.float32
    assert float(loss_low) == pytest.approx(float(loss_32), rel=1e-6)


# ---- 3. masked arithmetic = the former data-dependent indexing ----------------------------------

def test_decoupled_mean_and_box_losses_equal_their_indexed_form():
    g = torch.Generator().manual_seed(5)
    per_roi = torch.rand(40, generator=g).requires_grad_(True)
    pos = torch.rand(40, generator=g) > 0.7
    indexed = 2.0 * per_roi[pos].sum() / pos.sum() + 0.5 * per_roi[~pos].sum() / (~pos).sum()
    masked = decoupled_mean(per_roi, pos, 2.0, 0.5)
    assert float(masked) == pytest.approx(float(indexed), rel=1e-6)
    grad_masked, = torch.autograd.grad(masked, per_roi)
    grad_indexed, = torch.autograd.grad(indexed, per_roi)
    assert torch.allclose(grad_masked, grad_indexed)

    s = (torch.randn(40, 4, generator=g) * 2).requires_grad_(True)
    t = torch.randn(40, 4, generator=g) * 2
    t[~pos] = float("nan")  # a background row's target never reaches the value or the gradient
    for loss, per_element in ((box_l1_loss, lambda a, b: (a - b).abs()), (box_giou_loss, None)):
        a, b = _boxes(torch.cat([s, s], 1)), _boxes(torch.cat([t, t], 1))
        x, y = (a, b) if per_element is None else (s, t)
        value = loss(x, y, pos)
        if per_element is None:
            from dla_kd.distill.losses import generalized_iou
            reference = (1.0 - generalized_iou(x[pos], y[pos])).sum() / 40
        else:
            reference = per_element(x[pos], y[pos]).sum() / 40
        assert float(value) == pytest.approx(float(reference), rel=1e-6)
        grad, = torch.autograd.grad(value, s)
        assert torch.isfinite(grad).all() and (grad[~pos] == 0).all()


def test_valid_cells_and_extents_from_host_sizes():
    sizes = [(128, 160), (100, 130), (20, 23)]
    for hw, stride in (((32, 40), 4), ((16, 20), 8), ((2, 3), 64)):
        valid = valid_cells(sizes, hw, stride)
        rows = torch.tensor([(h + stride - 1) // stride for h, _ in sizes])
        cols = torch.tensor([(w + stride - 1) // stride for _, w in sizes])
        former = (torch.arange(hw[0])[None, :, None] < rows[:, None, None]) & (
            torch.arange(hw[1])[None, None, :] < cols[:, None, None])
        assert torch.equal(valid, former)
        assert image_extents(sizes, hw, stride) == valid_extents(valid)
    assert valid_cells([(128, 160)], (32, 40), 4) is None


def test_hcl_with_host_extents_equals_hcl_reading_the_mask():
    s_low, s, t = _pair((2, 4, 7, 9), torch.float32, scale=1.0)
    valid = _valid()
    a = hcl_loss([s], [t], valid=[valid])
    b = hcl_loss([s], [t], valid=[valid], extents=[image_extents([(28, 36), (20, 23)], (7, 9), 4)])
    assert float(a) == float(b)


def test_pkd_single_cell_has_zero_std_and_a_finite_gradient():
    x = torch.randn(1, 3, 2, 2).requires_grad_(True)
    valid = torch.zeros(1, 2, 2, dtype=torch.bool)
    valid[0, 0, 0] = True
    out = standardize_per_channel(x, valid=valid)
    assert torch.equal(out[0, :, 0, 0], torch.zeros(3))  # (x - mean) / (0 + eps) on the one cell
    out[..., 0, 0].sum().backward()
    assert torch.isfinite(x.grad).all()


def test_mgd_generator_lives_on_the_features_device():
    cfg = get_dla_kd_cfg()
    mgd = DISTILLER_REGISTRY.get("mgd")(cfg, _fpn_model(8), _fpn_model(8))
    seen = []
    original = torch.rand

    def spy(*args, generator=None, **kwargs):
        seen.append((generator.device if generator is not None else None, kwargs.get("device")))
        return original(*args, generator=generator, **kwargs)

    feats = {f"p{i}": torch.randn(1, 8, 2 ** (7 - i), 2 ** (7 - i)) for i in range(2, 7)}
    ctx = _ctx(feats, [[[0, 0, 10, 10]]], (128, 128), t_features={k: v.clone() for k, v in feats.items()})
    with EventStorage(4):
        torch.rand = spy
        try:
            mgd(ctx)
        finally:
            torch.rand = original
        # On the CPU the stream is the former CPU generator's: the same masks as before.
        expected = torch.rand(8, generator=torch.Generator().manual_seed(mgd.mask_seed * 1_000_003 + 4))
        assert torch.equal(torch.rand(8, generator=mgd.mask_generator("cpu")), expected)
    assert len(seen) == 4 and all(gen == dev == torch.device("cpu") for gen, dev in seen)


# ---- 2. DISTILL.BALANCE on scaled gradients ----------------------------------------------------

class _Toy(nn.Module):
    """Conv 'backbone' + linear 'head'; a detection loss and two KD losses, one of them as tiny as
    MGD's (its activation gradients, about 1e-8, flush to zero in float16 unless scaled)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Linear(8, 4)

    def losses(self, x, target):
        f = self.backbone(x)
        out = self.head(f.mean(dim=(2, 3)))
        det = out.float().pow(2).mean() + f.float().abs().mean()
        tiny = 2e-9 * (f.float() - target).pow(2).sum() / x.shape[0]
        resp = 0.01 * (out.float() + 3.0).pow(2).mean()
        return det, {"mgd": tiny, "logit_kd": resp}


def _data(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 8, 16, 16, generator=g)


def _balancer(iters=2):
    return LossBalancer(["mgd", "logit_kd"], [False, True], [1.0, 0.5], iters, [1.0, 1.0])


def _calibrate(model, balancer, seeds, autocast_dtype=None):
    for seed in seeds:
        x, target = _data(seed)
        with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            det, kd = model.losses(x, target)
            balancer.observe(det, kd, model.backbone.parameters(), model.head.parameters())
    return [balancer.weight(n) for n in balancer.names]


class _FakeScaler:
    """What the balancer reads of a GradScaler."""

    def __init__(self, scale):
        self.scale = scale

    def is_enabled(self):
        return True

    def get_scale(self):
        return self.scale


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("scaler", [None, 1024.0], ids=["default_scale", "grad_scaler"])
def test_balance_under_autocast_equals_float32_calibration(dtype, scaler):
    model = _Toy()
    reference = _calibrate(model, _balancer(), [0, 1])
    balancer = _balancer()
    if scaler is not None:
        balancer.grad_scaler = _FakeScaler(scaler)
    with torch.autocast("cpu", dtype=dtype):
        assert balancer.gradient_scale(torch.device("cpu")) == (scaler or DEFAULT_AMP_SCALE)
    weights = _calibrate(model, balancer, [0, 1], dtype)
    assert not balancer.calibrating
    assert weights == pytest.approx(reference, rel=2e-2)
    assert balancer.gradient_scale(torch.device("cpu")) == (scaler or 1.0)  # no autocast: 1


def test_unscaled_float16_gradients_underflow():
    """Why the scale: measured unscaled under float16 autocast, the tiny loss has no gradient."""
    model = _Toy()
    x, target = _data(0)
    params = list(model.backbone.parameters())
    with torch.autocast("cpu", dtype=torch.float16):
        _, kd = model.losses(x, target)
    fp32 = float(scaled_grad_norm(model.losses(x, target)[1]["mgd"], params))
    assert float(scaled_grad_norm(kd["mgd"], params, 1.0)) == 0.0
    assert float(scaled_grad_norm(kd["mgd"], params, DEFAULT_AMP_SCALE)) == pytest.approx(fp32, rel=1e-3)


def test_non_finite_observation_is_skipped_with_a_warning(caplog):
    model = _Toy()
    reference = _calibrate(model, _balancer(iters=1), [1])
    balancer = _balancer(iters=1)
    x, target = _data(0)
    det, kd = model.losses(x, target)
    kd["mgd"] = kd["mgd"] * float("nan")
    with caplog.at_level(logging.WARNING, logger="dla_kd.distill.balance"):
        balancer.observe(det, kd, model.backbone.parameters(), model.head.parameters())
    assert balancer.calibrating and int(balancer.observed) == 0
    assert "non-finite gradient norm of 'mgd'" in caplog.text and "skipped" in caplog.text
    assert _calibrate(model, balancer, [1]) == pytest.approx(reference, rel=1e-9)


def test_overflowing_scale_is_halved_until_the_norms_are_finite(caplog):
    """A scale at which a loss's scaled gradient overflows float32 (GradScaler-like 2^120, a
    gradient of 2^10 per weight) is halved per skipped observation; the weights then equal the
    float32 calibration."""
    class Big(_Toy):
        def losses(self, x, target):
            det, kd = super().losses(x, target)
            kd["mgd"] = 1024.0 * self.backbone[0].weight.sum()
            return det, kd

    model = Big()
    reference = _calibrate(model, _balancer(iters=1), [0])
    balancer = _balancer(iters=1)
    balancer.grad_scaler = _FakeScaler(2.0**120)
    with caplog.at_level(logging.WARNING, logger="dla_kd.distill.balance"):
        calls = 0
        while balancer.calibrating and calls < 10:
            _calibrate(model, balancer, [0])
            calls += 1
    assert calls == 4 and caplog.text.count("non-finite gradient norm") == 3  # 2^130, 2^129, 2^128 overflow
    assert [balancer.weight(n) for n in balancer.names] == pytest.approx(reference, rel=1e-9)


def test_attach_grad_scaler_reaches_the_balancer_through_ddp_wrapping():
    inner = nn.Module()
    inner.balancer = _balancer()
    wrapped = SimpleNamespace(module=inner)
    scaler = _FakeScaler(8.0)
    attach_grad_scaler(wrapped, scaler)
    assert inner.balancer.grad_scaler is scaler
    attach_grad_scaler(nn.Linear(2, 2), scaler)  # no balancer: nothing to do


def test_the_trainer_attaches_its_grad_scaler(use_synthetic_root, tmp_path):
    """SOLVER.AMP.ENABLED builds Detectron2's AMPTrainer; its GradScaler is the balancer's."""
    from dla_kd.engine import Trainer

    config = write_config(str(tmp_path / "teacher.yaml"), TINY, ["MODEL.FPN.OUT_CHANNELS", "64"])
    cfg = distill_cfg(config, ["fitnet"], opts=["SOLVER.AMP.ENABLED", "True", "DISTILL.BALANCE.ENABLED", "True",
                                                "OUTPUT_DIR", str(tmp_path / "out"), "DATASETS.TEST", "()"])
    trainer = Trainer(cfg)
    model = getattr(trainer._trainer.model, "module", trainer._trainer.model)
    assert model.balancer.grad_scaler is trainer._trainer.grad_scaler


def _balance_worker(rank, store, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model = _Toy()
        balancer = _balancer(iters=2)
        # Different data on each rank, as DDP gives each its share of the batch.
        weights = _calibrate(model, balancer, [10 * rank, 10 * rank + 1], torch.float16)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"weights": weights, "calibrated": not balancer.calibrating,
                       "buffers": balancer.weights.tolist()}, f)
        # as dla_kd.engine.launch does: a rank tearing gloo down while its peer still talks to it
        # aborts the peer (SIGABRT, seen on a loaded machine)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_balance_on_two_gloo_processes_gives_identical_weights(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_balance_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    results = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    assert results[0]["calibrated"] and results[1]["calibrated"]
    assert results[0]["weights"] == results[1]["weights"] == results[0]["buffers"] == results[1]["buffers"]
    # The norms are averaged over ranks and iterations: the float32 calibration on all four batches.
    model = _Toy()
    sums = collections.defaultdict(float)
    for seed in (0, 1, 10, 11):
        x, target = _data(seed)
        det, kd = model.losses(x, target)
        backbone, both = list(model.backbone.parameters()), list(model.backbone.parameters()) + list(model.head.parameters())
        sums["mgd"] += float(scaled_grad_norm(kd["mgd"], backbone))
        sums["det_b"] += float(scaled_grad_norm(det, backbone))
        sums["logit_kd"] += float(scaled_grad_norm(kd["logit_kd"], both))
        sums["det_h"] += float(scaled_grad_norm(det, both))
    expected = [1.0 * sums["det_b"] / sums["mgd"], 0.5 * sums["det_h"] / sums["logit_kd"]]
    assert results[0]["weights"] == pytest.approx(expected, rel=1e-2)


# ---- 3. no host syncs in a distillation step ----------------------------------------------------

PACKAGE = os.path.join(REPO, "dla_kd") + os.sep
STRUCTURES = os.path.join(os.path.dirname(detectron2.__file__), "structures") + os.sep
SYNCING = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "nonzero", "numpy", "cpu")


def _names_the_cpu(frame) -> bool:
    """Whether the source line ``frame`` runs names the CPU (``"cpu"``, ``'cpu'``, ``.cpu(``)."""
    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
    return any(word in line for word in ('"cpu"', "'cpu'", ".cpu("))


class _SyncCounter(TorchFunctionMode):
    """Counts, per calling line of dla_kd/, the tensor methods that read a tensor back to the host
    (``item``, ``tolist``, ``bool(t)``, ``float(t)``, ``int(t)``, ``nonzero``, ``numpy``, ``cpu``),
    copies to the CPU with ``.to`` (``t.to("cpu")``, ``t.to(device="cpu")``, also through a
    Detectron2 structure's ``.to``, e.g. ``instances.to("cpu")``) and boolean indexing ``x[mask]``
    (its output size is data-dependent). Calls from Detectron2 and torch are not counted.

    On this CPU-only test every tensor is on the CPU, so ``x.to(features.device)`` also targets
    it: a ``.to`` counts when its target is the CPU and the dla_kd/ line that calls it names the
    CPU (a device taken from a tensor is the features' device on a GPU).

    Implemented as a ``TorchFunctionMode``: tensor methods reach it without changing
    ``torch.Tensor`` (setting and deleting ``torch.Tensor.__getitem__`` leaves CPython's sequence
    slot filled, after which ``torch.tensor([t])`` fails for a 0-d ``t`` and ONNX export breaks)."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def _record(self, what, frame):
        if frame is not None and frame.f_code.co_filename.startswith(PACKAGE):
            self.calls[(what, os.path.relpath(frame.f_code.co_filename, REPO), frame.f_lineno)] += 1

    def _record_copy_to_cpu(self, args, kwargs, frame):
        target = kwargs.get("device", args[0] if args else None)
        if isinstance(target, torch.Tensor):
            target = target.device
        if not isinstance(target, (str, torch.device)) or torch.device(target).type != "cpu":
            return
        while frame is not None and frame.f_code.co_filename.startswith(STRUCTURES):  # Boxes.to, Instances.to
            frame = frame.f_back
        if frame is not None and frame.f_code.co_filename.startswith(PACKAGE) and _names_the_cpu(frame):
            self.calls[("to(cpu)", os.path.relpath(frame.f_code.co_filename, REPO), frame.f_lineno)] += 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        caller = sys._getframe(1)  # the line that called the tensor method
        if name in SYNCING:
            self._record(name, caller)
        elif name == "to":
            self._record_copy_to_cpu(args[1:], kwargs, caller)
        return func(*args, **kwargs)

    def __enter__(self):
        # x[mask] does not reach a TorchFunctionMode: the boolean index is seen at dispatch (aten.index).
        self._bool_index = _BoolIndexCounter(self)
        self._bool_index.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._bool_index.__exit__(*exc)


class _BoolIndexCounter(TorchDispatchMode):
    """Records boolean-mask indexing (``aten.index`` with a bool index: a data-dependent output
    size) for a :class:`_SyncCounter`, at the Python line that indexed."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.index, torch.ops.aten.index_put, torch.ops.aten.index_put_):
            indices = args[1] if len(args) > 1 else ()
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices):
                self.counter._record("x[bool mask]", sys._getframe(1))
        return func(*args, **(kwargs or {}))


def test_the_counter_sees_what_it_counts():
    counter = _SyncCounter()
    with counter:
        x = torch.ones(3)
        _ = x.tolist(), float(x[0]), bool(x.sum() > 0), x[x > 0]
    assert not counter.calls  # called from tests/, not from dla_kd/: not counted
    from dla_kd.distill.losses import valid as valid_module
    with counter:
        valid_module.valid_extents(torch.ones(1, 2, 2, dtype=torch.bool))
    assert {k[0] for k in counter.calls} == {"tolist"}


def _count_as_dla_kd(name, source, *args):
    """Run ``probe(*args)`` of ``source`` as if it were the dla_kd/ file ``name`` (never written:
    linecache serves its lines) under a :class:`_SyncCounter`; return the counter and the path."""
    path = os.path.join(PACKAGE, name)
    linecache.cache[path] = (len(source), None, source.splitlines(keepends=True), path)
    namespace = {"torch": torch}
    exec(compile(source, path, "exec"), namespace)
    counter = _SyncCounter()
    try:
        with counter:
            namespace["probe"](*args)
    finally:
        del linecache.cache[path]
    return counter, path


def test_the_counter_sees_every_read_back_on_a_dla_kd_line_and_leaves_torch_as_it_was():
    source = (
        "def probe(x):\n"
        "    a = bool(x.sum() > 0)\n"
        "    b = float(x[0])\n"
        "    c = int(x[0])\n"
        "    d = x[x > 0]\n"
        "    e = x.tolist()\n"
        "    f = x.nonzero()\n"
        "    g = x[:1].item()\n"
    )
    counter, _ = _count_as_dla_kd("_sync_counter_reads.py", source, torch.ones(3))
    assert sorted((what, line) for what, _, line in counter.calls) == [
        ("__bool__", 2), ("__float__", 3), ("__int__", 4), ("item", 8), ("nonzero", 7), ("tolist", 6),
        ("x[bool mask]", 5)]
    # Nothing of torch.Tensor was changed (a 0-d tensor is still no sequence: ONNX export relies on it).
    assert torch.tensor([torch.tensor(1)]).tolist() == [1]


def test_the_counter_sees_copies_to_the_cpu():
    """``.cpu()``, ``.to("cpu")``, ``.to(device=torch.device("cpu"))`` and ``instances.to("cpu")``
    on a line of dla_kd/ count; ``.to(x.device)`` and ``.to(dtype)`` do not."""
    source = (
        "def probe(x, instances):\n"
        "    a = x.cpu()\n"
        "    b = x.to('cpu')\n"
        "    c = x.to(device=torch.device(\"cpu\"), non_blocking=True)\n"
        "    d = instances.to(\"cpu\")\n"
        "    e = x.to(x.device)\n"
        "    f = x.to(torch.float16)\n"
    )
    instances = Instances((8, 8), pred_boxes=Boxes(torch.ones(2, 4)), scores=torch.ones(2))
    counter, path = _count_as_dla_kd("_sync_counter_probe.py", source, torch.ones(3), instances)
    assert sorted((what, line) for what, _, line in counter.calls) == [
        ("cpu", 2), ("to(cpu)", 3), ("to(cpu)", 4), ("to(cpu)", 5)]
    assert counter.calls[("to(cpu)", os.path.relpath(path, REPO), 5)] == 2  # both fields of the instances


def test_a_distillation_step_reads_nothing_back_to_the_host(tmp_path):
    """A training step of a tiny distillation model with every registered loss (DeFeat's
    decoupled logit weights on, so the per-group RoI reduction runs) and DISTILL.BALANCE after its
    calibration, on a batch with padding: no line of dla_kd/ reads a tensor back to the host.
    The calibration iteration itself reads its norms once (balance.py); Detectron2's own RPN /
    ROI heads / box transform have syncs of their own, not counted here."""
    config = write_config(str(tmp_path / "teacher.yaml"), TINY, ["MODEL.FPN.OUT_CHANNELS", "64"])
    names = sorted(DISTILLER_REGISTRY._obj_map)
    cfg = distill_cfg(config, names, opts=[
        "DISTILL.BALANCE.ENABLED", "True", "DISTILL.BALANCE.ITERS", "1",
        "DISTILL.LOGIT_KD.POS_WEIGHT", "2.0", "DISTILL.LOGIT_KD.NEG_WEIGHT", "2.0",
        "DISTILL.BOX_KD.LOSS", "giou",
    ])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = fake_batch()
    batch[1]["image"] = batch[1]["image"][:, :100, :130]  # padding: valid masks on every level
    with EventStorage(0):
        model(batch)  # calibration
    assert not model.balancer.calibrating
    counter = _SyncCounter()
    with EventStorage(1), counter:
        losses = model(batch)
    assert not counter.calls, dict(counter.calls)
    assert all(math.isfinite(float(v)) for v in losses.values())
    assert any(k.startswith("loss_kd_defeat") for k in losses) and "loss_kd_reviewkd" in losses


# ---- teacher precision on a CUDA device (faked) -------------------------------------------------

@pytest.fixture
def fake_cuda(monkeypatch):
    """Enough of CUDA for torch.autocast("cuda", ...) to be built and entered (thread-local
    flags only; no kernel runs on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)


@pytest.mark.parametrize("name,dtype", [("float16", torch.float16), ("bfloat16", torch.bfloat16)])
def test_half_teacher_autocasts_on_cuda(fake_cuda, name, dtype):
    with teacher_module.teacher_precision(torch.device("cuda", 0), name):
        assert torch.is_autocast_enabled() and torch.get_autocast_gpu_dtype() == dtype
        assert not torch.is_autocast_cpu_enabled()
    assert not torch.is_autocast_enabled()


def test_float32_teacher_switches_the_trainers_cuda_autocast_off(fake_cuda):
    """AMPTrainer's autocast(float16) is on around the whole forward: a float32 teacher on CUDA
    turns it off for its own forward and back on after."""
    with torch.autocast("cuda", dtype=torch.float16):
        assert torch.is_autocast_enabled()
        with teacher_module.teacher_precision(torch.device("cuda"), "float32"):
            assert not torch.is_autocast_enabled()
        assert torch.is_autocast_enabled()


def test_cpu_teacher_stays_float32_whatever_its_dtype():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for name in ("float32", "float16", "bfloat16"):
            with teacher_module.teacher_precision(torch.device("cpu"), name):
                assert not torch.is_autocast_cpu_enabled()
                assert F.linear(torch.ones(1, 2), torch.ones(2, 2)).dtype == torch.float32
