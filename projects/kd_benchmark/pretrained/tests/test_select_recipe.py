"""The selection rule of protocol.md on published-run folders made in the test."""
import json
import os
import tempfile
import sys

import pytest

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
import select_recipe  # noqa: E402

from dla_kd.config import load_config  # noqa: E402


def _publish(runs, recipe, ap, kd_weights=None, dataset="synthetic_doclaynet_val"):
    d = runs / recipe / "seed42"
    d.mkdir(parents=True)
    (d / f"eval_{dataset}.json").write_text(json.dumps({"dataset": dataset, "results": {"bbox": {"AP": ap}}}))
    rows = [{"iteration": 19, **{f"kd_weight/{k}": v / 2 for k, v in (kd_weights or {}).items()}},
            {"iteration": 1999, **{f"kd_weight/{k}": v for k, v in (kd_weights or {}).items()}}]
    (d / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows))


RECIPES = os.path.join(HERE, "configs", "recipes")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))


def _load_beside_the_recipes(path):
    """Load a written combination config from the recipes folder (its _BASE_ is relative there)."""
    with tempfile.NamedTemporaryFile("w", dir=RECIPES, suffix=".yaml", delete=True) as f:
        f.write(open(path).read())
        f.flush()
        return load_config(f.name)


def _select(step, runs, tmp_path):
    select_recipe.main([step, "--runs", str(runs), "--out", str(tmp_path / "selection.json"),
                        "--combination", str(tmp_path / "combination.yaml")])
    return json.loads((tmp_path / "selection.json").read_text())


def test_terms_then_recommended_follow_the_rule_on_validation_only(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # configs name repo-relative paths
    runs = tmp_path / "runs"
    for recipe, ap in {"defeat": 30.0, "pkd": 31.0, "crosskd": 29.0, "logit_kd": 29.0}.items():
        _publish(runs, recipe, ap)
    _publish(runs, "mgd_balanced", 31.0, kd_weights={"mgd": 61.5})  # ties PKD: the first in the list wins
    # A test-split file with other numbers must not change anything.
    (runs / "pkd" / "seed42" / "eval_synthetic_doclaynet_test.json").write_text(
        json.dumps({"dataset": "synthetic_doclaynet_test", "results": {"bbox": {"AP": 99.0}}}))
    selection = _select("terms", runs, tmp_path)
    assert (selection["feature"], selection["response"]) == ("mgd_balanced", "crosskd")
    cfg = _load_beside_the_recipes(tmp_path / "combination.yaml")
    assert list(cfg.DISTILL.LOSSES) == ["mgd", "crosskd"]
    assert cfg.DISTILL.MGD.WEIGHT == 61.5 and not cfg.DISTILL.BALANCE.ENABLED  # the last logged weight, fixed
    with pytest.raises(FileNotFoundError, match="combination.*not published"):
        _select("recommended", runs, tmp_path)
    _publish(runs, "combination", 32.5)
    selection = _select("recommended", runs, tmp_path)
    assert selection["recommended"] == "combination" and selection["val_bbox_AP"]["combination"] == 32.5


def test_an_unbalanced_feature_loss_keeps_its_published_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    runs = tmp_path / "runs"
    for recipe, ap in {"mgd_balanced": 20.0, "defeat": 30.0, "pkd": 25.0, "crosskd": 28.0, "logit_kd": 29.0}.items():
        _publish(runs, recipe, ap, kd_weights={"mgd": 5.0} if recipe == "mgd_balanced" else None)
    _select("terms", runs, tmp_path)
    cfg = _load_beside_the_recipes(tmp_path / "combination.yaml")
    assert list(cfg.DISTILL.LOSSES) == ["defeat", "logit_kd"]
    reference = load_config(os.path.join(RECIPES, "defeat.yaml"))
    assert cfg.DISTILL.DEFEAT == reference.DISTILL.DEFEAT and cfg.DISTILL.MGD == reference.DISTILL.MGD
