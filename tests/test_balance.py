"""DISTILL.BALANCE: gradient-norm calibration of the KD weights (dla_kd/distill/balance.py)."""
import json
import os

import pytest
import torch
from torch import nn

from dla_kd.distill.balance import BALANCE_FILE, LossBalancer, grad_norm


class _Toy(nn.Module):
    """A 'backbone' and a 'head' with a detection loss and two KD losses of known gradients."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def losses(self, x):
        f = self.backbone(x)
        out = self.head(f)
        det = out.pow(2).mean() + f.abs().mean()
        feat_kd = 7.0 * (f - 1.0).pow(2).mean()  # reaches the backbone only
        resp_kd = 0.01 * (out + 3.0).pow(2).mean()  # reaches head and backbone
        return det, {"fitnet": feat_kd, "logit_kd": resp_kd}


def _balancer(targets=(1.0, 0.5), iters=1, output_dir=""):
    return LossBalancer(["fitnet", "logit_kd"], [False, True], list(targets), iters, [1.0, 1.0], output_dir)


def test_calibrated_weights_reproduce_the_target_ratio(tmp_path):
    model, x = _Toy(), torch.randn(8, 4)
    balancer = _balancer(output_dir=str(tmp_path))
    det, kd = model.losses(x)
    balancer.observe(det, kd, model.backbone.parameters(), model.head.parameters())
    assert not balancer.calibrating
    backbone = list(model.backbone.parameters())
    both = backbone + list(model.head.parameters())
    # On the same batch: weight * |g_kd| / |g_det| equals the target, per parameter set.
    ratio_feat = balancer.weight("fitnet") * grad_norm(kd["fitnet"], backbone) / grad_norm(det, backbone)
    ratio_resp = balancer.weight("logit_kd") * grad_norm(kd["logit_kd"], both) / grad_norm(det, both)
    assert ratio_feat == pytest.approx(1.0, rel=1e-6)
    assert ratio_resp == pytest.approx(0.5, rel=1e-6)
    # Logged to the output folder.
    with open(os.path.join(tmp_path, BALANCE_FILE)) as f:
        report = json.load(f)
    assert [r["loss"] for r in report["losses"]] == ["fitnet", "logit_kd"]
    assert report["losses"][0]["weight"] == pytest.approx(balancer.weight("fitnet"))
    assert report["losses"][1]["kind"] == "response"


def test_configured_weights_apply_until_calibrated_and_means_are_used():
    model = _Toy()
    balancer = _balancer(iters=3)
    norms = []
    for seed in range(3):
        assert balancer.weight("fitnet") == 1.0 and balancer.calibrating
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(seed))
        det, kd = model.losses(x)
        backbone = list(model.backbone.parameters())
        norms.append((grad_norm(kd["fitnet"], backbone), grad_norm(det, backbone)))
        balancer.observe(det, kd, model.backbone.parameters(), model.head.parameters())
    expected = sum(d for _, d in norms) / sum(k for k, _ in norms)
    assert balancer.weight("fitnet") == pytest.approx(expected, rel=1e-6)


def test_zero_target_switches_the_loss_off():
    model = _Toy()
    balancer = _balancer(targets=(0.0, 1.0))
    det, kd = model.losses(torch.randn(8, 4))
    balancer.observe(det, kd, model.backbone.parameters(), model.head.parameters())
    assert balancer.weight("fitnet") == 0.0
    assert balancer.weight("logit_kd") > 0.0


def test_state_dict_restores_the_calibration():
    model = _Toy()
    balancer = _balancer()
    det, kd = model.losses(torch.randn(8, 4))
    balancer.observe(det, kd, model.backbone.parameters(), model.head.parameters())
    restored = _balancer()
    assert restored.calibrating
    restored.load_state_dict(balancer.state_dict())
    assert not restored.calibrating
    assert restored.weight("fitnet") == balancer.weight("fitnet")
    assert restored.weight("logit_kd") == balancer.weight("logit_kd")


def test_negative_target_is_refused():
    with pytest.raises(ValueError, match="targets must be >= 0"):
        _balancer(targets=(-1.0, 1.0))


def _distill_model(tmp_path, opts=()):
    from detectron2.modeling import build_model

    from tiny_models import distill_cfg, write_config

    os.makedirs(tmp_path, exist_ok=True)
    config = write_config(str(tmp_path / "teacher.yaml"), opts=("MODEL.FPN.OUT_CHANNELS", "64"))
    cfg = distill_cfg(config, ["fitnet", "logit_kd"], opts=[
        "DISTILL.BALANCE.ENABLED", "True", "DISTILL.BALANCE.ITERS", "1", "DISTILL.BALANCE.TARGET", "0.5",
        "DISTILL.LOGIT_KD.BALANCE_TARGET", "2.0", "OUTPUT_DIR", str(tmp_path), *opts,
    ])
    torch.manual_seed(0)
    return build_model(cfg).train()


def test_distillation_model_reaches_the_target_ratio_on_a_fixed_batch(tmp_path):
    from detectron2.utils.events import EventStorage

    from tiny_models import fake_batch

    model = _distill_model(tmp_path)
    batch = fake_batch()
    with EventStorage(0):
        torch.manual_seed(1)
        model(batch)  # calibration step (configured weights 1.0)
    assert not model.balancer.calibrating
    # The same batch and RNG again: the weighted KD gradients relate to the detection gradients
    # as the targets say, on the parameters each kind of loss is measured on.
    with EventStorage(1) as storage:
        torch.manual_seed(1)
        losses = model(batch)
        assert storage.latest()["kd_weight/fitnet"][0] == pytest.approx(model.balancer.weight("fitnet"))
    det = sum(v for k, v in losses.items() if not k.startswith("loss_kd_"))
    backbone = [p for p in model.student.backbone.parameters() if p.requires_grad]
    heads = backbone + [p for p in model.student.roi_heads.parameters() if p.requires_grad]
    ratio_fitnet = grad_norm(losses["loss_kd_fitnet"], backbone) / grad_norm(det, backbone)
    kd_logit = sum(v for k, v in losses.items() if k.startswith("loss_kd_logit_kd"))
    ratio_logit = grad_norm(kd_logit, heads) / grad_norm(det, heads)
    assert ratio_fitnet == pytest.approx(0.5, rel=1e-3)
    assert ratio_logit == pytest.approx(2.0, rel=1e-3)
    # In the checkpoint (state_dict) and restored into a fresh model, as --resume does.
    state = model.state_dict()
    assert "balancer.weights" in state and "balancer.calibrated" in state
    fresh = _distill_model(tmp_path / "fresh")
    fresh.load_state_dict(state)
    assert not fresh.balancer.calibrating
    assert fresh.balancer.weight("logit_kd") == pytest.approx(model.balancer.weight("logit_kd"))
    assert os.path.isfile(os.path.join(tmp_path, BALANCE_FILE))
