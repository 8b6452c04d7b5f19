"""The recommended distillation recipes (``configs/*/distill/recommended_*.yaml``): each builds and
trains on synthetic pages of its dataset's style, with the KD weights its header promises.

Models are shrunk only where a step would otherwise take long on a CPU (image sizes; DiT/ViT
teachers as tiny ViTs; the ImageNet-initialised ResNet student with GroupNorm, since FrozenBN
cannot train from scratch); the recipe (``DISTILL.*``) is the file's own.
"""
import json
import os

import pytest

import dla_kd  # noqa: F401
from dla_kd.data.synthetic import generate_dataset
from dla_kd.engine import Trainer, load_config
from dla_kd.inference.student import build_deployable_model
from tiny_models import REPO

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = [
    "MODEL.DEVICE", "cpu",
    "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "160",
    "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "160",
    "INPUT.CROP.ENABLED", "False",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", "2", "SOLVER.AMP.ENABLED", "False",
    "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()",
    "DISTILL.TEACHER.ALLOW_RANDOM_INIT", "True", "DISTILL.TEACHER.WEIGHTS", "",
    "DISTILL.TEACHER.SANITY_CHECK.ENABLED", "False", "DISTILL.TEACHER.FEATURE_CACHE.DIR", "",
    "DISTILL.BALANCE.ITERS", "1",
]
RESNET_STUDENT = ["MODEL.RESNETS.NORM", "GN"]
TINY_VIT_TEACHER = ["DISTILL.TEACHER.OPTS", "['MODEL.VIT.SIZE', 'tiny']"]
TINY_TIMM_VIT_TEACHER = ["DISTILL.TEACHER.OPTS", "['MODEL.TIMM.NAME', 'vit_tiny_patch16_224']"]

# config -> (training pages, overrides); every recipe: DeFeat + CrossKD at their authors' weights, fixed
RECOMMENDED = {
    "configs/doclaynet/distill/recommended_R_101_to_R_50.yaml": ("synthetic_doclaynet_train", RESNET_STUDENT),
    "configs/publaynet/distill/recommended_DiT_B_Cascade_to_R_50.yaml":
        ("synthetic_publaynet_train", RESNET_STUDENT + TINY_VIT_TEACHER),
    "configs/doclaynet/distill/recommended_ViT_B_to_ViT_T.yaml": ("synthetic_doclaynet_train", TINY_TIMM_VIT_TEACHER),
    "configs/synthetic/bench/distill/recommended_R_50_GN_to_MNv3_GN.yaml": ("synthetic_doclaynet_train", []),
}
# the KD benchmark protocol's selection (projects/kd_benchmark/pretrained/results/selection.json)
SELECTED = {"recommended": "combination", "feature": "defeat", "response": "crosskd"}


@pytest.fixture(scope="module")
def pages_root(synthetic_root, tmp_path_factory):
    """The session's synthetic DocLayNet-style pages plus 2 PubLayNet-style ones."""
    root = tmp_path_factory.mktemp("recommended_datasets")
    os.makedirs(root / "synthetic")
    os.symlink(os.path.join(synthetic_root, "synthetic", "doclaynet"), root / "synthetic" / "doclaynet")
    generate_dataset("publaynet", 2, str(root / "synthetic" / "publaynet"), seed=0, split="train",
                     page_size=(256, 256), show_progress=False)
    return str(root)


def test_the_agreed_recommended_configs_are_all_here():
    found = {os.path.relpath(os.path.join(d, f), REPO)
             for d, _, files in os.walk(os.path.join(REPO, "configs")) for f in files
             if f.startswith("recommended_")}
    assert found == set(RECOMMENDED)


@pytest.mark.parametrize("config", sorted(RECOMMENDED), ids=lambda c: os.path.basename(c)[:-5])
def test_recommended_config_trains_with_its_promised_weights(config, pages_root, monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTRON2_DATASETS", pages_root)
    train, extra = RECOMMENDED[config]
    out = tmp_path / "out"
    cfg = load_config(os.path.join(REPO, config), SMALL + extra + [
        "DATASETS.TRAIN", f"('{train}',)", "OUTPUT_DIR", str(out)])
    assert cfg.MODEL.META_ARCHITECTURE == "DistillGeneralizedRCNN"
    assert list(cfg.DISTILL.LOSSES) == [SELECTED["feature"], SELECTED["response"]]
    assert cfg.DISTILL.CROSSKD.MASK_WEIGHT == 0.0  # the benchmark's CrossKD: box terms only
    assert cfg.DISTILL.BALANCE.ENABLED is False  # the authors' weights, as the benchmark selected them
    monkeypatch.chdir(REPO)  # teacher configs are named relative to the repository
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert (out / "model_final.pth").is_file()
    # the student alone loads from the checkpoint (adapters left behind)
    build_deployable_model(cfg, str(out / "model_final.pth"))
    history = trainer.storage.histories()
    losses = [k for k in history if k.startswith("loss_kd_")]
    assert any(k.startswith("loss_kd_defeat") for k in losses) and any(k.startswith("loss_kd_crosskd") for k in losses)
    assert history["kd_weight/defeat"].latest() == pytest.approx(1.0)
    assert history["kd_weight/crosskd"].latest() == pytest.approx(1.0)
    assert not (out / "kd_balance.json").exists()


def test_the_recommended_recipe_is_the_protocols_selection():
    """The configs follow the KD benchmark's selection: its recommended recipe is F* + R* (as run)."""
    selection = json.load(open(os.path.join(REPO, "projects", "kd_benchmark", "pretrained", "results",
                                            "selection.json")))
    assert {k: selection[k] for k in SELECTED} == SELECTED
    combination = load_config(os.path.join(REPO, "projects", "kd_benchmark", "pretrained", "configs", "recipes",
                                           "combination.yaml"))
    assert list(combination.DISTILL.LOSSES) == [SELECTED["feature"], SELECTED["response"]]
    assert combination.DISTILL.BALANCE.ENABLED is False


def test_full_model_gradient_clipping_of_the_dit_recipe():
    """SOLVER.CLIP_GRADIENTS.CLIP_TYPE full_model (the DiT/ViT configs): one norm over every
    parameter's gradient is clipped to CLIP_VALUE before the step (Detectron2 knows only per-parameter types)."""
    import torch

    from dla_kd.config import get_dla_kd_cfg
    from dla_kd.engine.optimizer import build_optimizer

    cfg = get_dla_kd_cfg()
    cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY = "SGD", 1.0, 0.0
    cfg.SOLVER.MOMENTUM = 0.0
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED, cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = True, "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE, cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 1.0, 2.0
    model = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False), torch.nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        model[0].weight.zero_()
        model[1].weight.zero_()
    optimizer = build_optimizer(cfg, model)
    model[0].weight.grad = torch.tensor([[3.0, 0.0]])
    model[1].weight.grad = torch.tensor([[4.0]])  # total norm 5: each gradient scaled by 1/5
    optimizer.step()
    assert torch.allclose(model[0].weight, torch.tensor([[-0.6, 0.0]]), atol=1e-6)
    assert torch.allclose(model[1].weight, torch.tensor([[-0.8]]), atol=1e-6)
    for opt in ("AdamW", "SGD"):
        cfg.SOLVER.OPTIMIZER = opt
        assert isinstance(build_optimizer(cfg, model), torch.optim.AdamW if opt == "AdamW" else torch.optim.SGD)
