"""Loss-term gradient diagnostics (kd_benchmark/loss_gradients.py, tools/kd_gradients.py)."""
import json
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

import dla_kd  # noqa: F401
from kd_benchmark.loss_gradients import batch_interplay, interplay, loss_terms, parameter_groups
from tiny_models import TINY, distill_cfg, fake_batch, save_random_weights, tool_main, write_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_loss_terms_group_the_outputs_by_distiller():
    names = ["loss_cls", "loss_box_reg", "loss_kd_logit_kd", "loss_kd_crosskd_cls", "loss_kd_crosskd_reg",
             "unlabeled/loss_cls", "unlabeled/loss_kd_crosskd_cls"]
    assert loss_terms(names, ["crosskd", "logit_kd"]) == {
        "detection": ["loss_cls", "loss_box_reg", "unlabeled/loss_cls"],
        "crosskd": ["loss_kd_crosskd_cls", "loss_kd_crosskd_reg", "unlabeled/loss_kd_crosskd_cls"],
        "logit_kd": ["loss_kd_logit_kd"],
    }
    # One distiller's name a prefix of another's: the longest match owns the output.
    assert loss_terms(["loss_kd_a_b_x", "loss_kd_a"], ["a", "a_b"]) == {
        "detection": [], "a": ["loss_kd_a"], "a_b": ["loss_kd_a_b_x"]}
    with pytest.raises(KeyError, match="'loss_kd_fgd_fg' belongs to none of the distillers"):
        loss_terms(["loss_kd_fgd_fg"], ["pkd"])


def test_interplay_norms_and_cosines():
    grads = {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([-4.0, 3.0]), "c": torch.tensor([-6.0, -8.0]),
             "zero": torch.zeros(2)}
    result = interplay(grads)
    assert result["norm"] == {"a": 5.0, "b": 5.0, "c": 10.0, "zero": 0.0}
    assert result["cosine"]["a|b"] == 0.0
    assert result["cosine"]["a|c"] == pytest.approx(-1.0)
    assert result["cosine"]["b|c"] == pytest.approx(0.0, abs=1e-7)
    assert result["cosine"]["a|zero"] == 0.0


def _losses(model, seed=0):
    torch.manual_seed(seed)
    with EventStorage(0):
        return model(fake_batch())


def _teacher(tmp_path):
    """A teacher config and random weights unlike the student's initialisation."""
    config = write_config(str(tmp_path / "t.yaml"), TINY)
    return config, save_random_weights(config, str(tmp_path / "t.pth"), seed=1)


def test_each_term_reaches_what_its_loss_acts_on(tmp_path):
    teacher, weights = _teacher(tmp_path)
    losses_of = ["fitnet", "logit_kd"]
    model = build_model(distill_cfg(teacher, losses_of, teacher_weights=weights)).train()
    losses = _losses(model)
    groups = parameter_groups(model.student)
    result = batch_interplay(losses, loss_terms(list(losses), losses_of), groups)
    # FitNet imitates FPN features: no gradient in the ROI heads; logit KD acts on the box classifier.
    assert result["roi_heads"]["norm"]["fitnet"] == 0.0
    assert result["roi_heads"]["norm"]["logit_kd"] > 0 and result["backbone"]["norm"]["fitnet"] > 0
    # The detection term is the gradient of the summed non-KD losses.
    detection = sum(v for k, v in losses.items() if not k.startswith("loss_kd_"))
    grads = torch.autograd.grad(detection, groups["backbone"], retain_graph=True, allow_unused=True)
    expected = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                          for g, p in zip(grads, groups["backbone"])]).norm()
    assert result["backbone"]["norm"]["detection"] == pytest.approx(float(expected), rel=1e-5)

    # Terms enter with the weight they train with: twice FitNet's weight, twice its gradient.
    doubled = build_model(distill_cfg(teacher, losses_of, teacher_weights=weights,
                                      opts=["DISTILL.FITNET.WEIGHT", "2.0"])).train()
    doubled.load_state_dict(model.state_dict())
    losses2 = _losses(doubled)
    result2 = batch_interplay(losses2, loss_terms(list(losses2), losses_of), parameter_groups(doubled.student))
    assert result2["backbone"]["norm"]["fitnet"] == pytest.approx(2 * result["backbone"]["norm"]["fitnet"], rel=1e-4)
    assert result2["backbone"]["cosine"]["detection|fitnet"] == pytest.approx(
        result["backbone"]["cosine"]["detection|fitnet"], abs=1e-4)


def test_kd_gradients_tool_writes_one_row_per_checkpoint(tmp_path, use_synthetic_root):
    teacher, weights = _teacher(tmp_path)
    cfg = distill_cfg(teacher, ["pkd"], teacher_weights=weights)
    config = tmp_path / "run.yaml"
    config.write_text(cfg.dump())
    model = build_model(cfg)
    checkpoints = []
    for iteration in (7, 19):
        path = str(tmp_path / f"model_{iteration}.pth")
        torch.save({"model": model.state_dict(), "iteration": iteration}, path)
        checkpoints.append(path)
    out = str(tmp_path / "out")
    assert tool_main("kd_gradients", "projects/kd_benchmark/tools")(["--config-file", str(config), "--checkpoints", *checkpoints,
                                      "--batches", "1", "--output", out]) == 0
    with open(os.path.join(out, "loss_gradients.json")) as f:
        report = json.load(f)
    assert [c["iteration"] for c in report["checkpoints"]] == [7, 19]
    backbone = report["checkpoints"][0]["groups"]["backbone"]
    assert set(backbone["norm"]) == {"detection", "pkd"} and backbone["norm"]["pkd"] > 0
    assert list(backbone["cosine"]) == ["detection|pkd"]
    # Same weights at both checkpoints, same batch and ROI draws: the same numbers.
    assert report["checkpoints"][1]["groups"] == report["checkpoints"][0]["groups"]
    with open(os.path.join(out, "loss_gradients.md")) as f:
        md = f.read()
    assert "| 7 |" in md and "| 19 |" in md and "cos detection / pkd" in md
    with pytest.raises(FileNotFoundError, match="nope.pth not found"):
        tool_main("kd_gradients", "projects/kd_benchmark/tools")(["--config-file", str(config), "--checkpoints", str(tmp_path / "nope.pth"),
                                   "--output", out])
