"""tools/train_net.py end to end on synthetic pages: train -> checkpoint -> --eval-only,
distillation resume, and multi-process (gloo) distillation through Detectron2's launch."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from detectron2.modeling import build_model

import dla_kd  # noqa: F401
from dla_kd.engine import Trainer, load_config
from tiny_models import MICRO, REPO, TINY, write_config

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
SHORT = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.005", "SOLVER.WARMUP_ITERS", "1",
         "SOLVER.STEPS", "()", "TEST.DETECTIONS_PER_IMAGE", "50"]


def _run(args, root, timeout=600):
    env = dict(os.environ, DETECTRON2_DATASETS=root, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, TRAIN_NET, *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _eval_file(output_dir):
    with open(os.path.join(output_dir, "eval_synthetic_doclaynet_val.json")) as f:
        return json.load(f)


def test_train_checkpoint_then_eval_only(synthetic_root, tmp_path):
    out = str(tmp_path / "train")
    _run(["--config-file", TINY, *MICRO, *SHORT, "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2",
          "OUTPUT_DIR", out], synthetic_root)
    for name in ("model_0000001.pth", "model_final.pth", "last_checkpoint", "metrics.json", "config.yaml"):
        assert os.path.isfile(os.path.join(out, name)), name
    trained = _eval_file(out)
    assert trained["iteration"] == 3 and trained["dataset"] == "synthetic_doclaynet_val"
    for task in ("bbox", "segm"):
        res = trained["results"][task]
        for metric in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            assert metric in res and (res[metric] is None or 0.0 <= res[metric] <= 100.0)
        assert isinstance(res["AP"], float)
        assert {f"AP-{c}" for c in ("Text", "Title", "Table", "Picture")} <= set(res)
    metrics = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    assert any("bbox/AP" in m for m in metrics) and any("total_loss" in m for m in metrics)

    evaluated = str(tmp_path / "eval")
    _run(["--config-file", TINY, "--eval-only", *MICRO, *SHORT, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
          "OUTPUT_DIR", evaluated], synthetic_root)
    again = _eval_file(evaluated)
    assert again["iteration"] is None and again["weights"].endswith("model_final.pth")
    # Same checkpoint, same data, deterministic inference: the same numbers as the final eval.
    assert again["results"] == trained["results"]


def test_eval_only_needs_weights(synthetic_root, tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=synthetic_root)
    proc = subprocess.run([sys.executable, TRAIN_NET, "--config-file", TINY, "--eval-only", *MICRO,
                           "OUTPUT_DIR", str(tmp_path)], env=env, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0 and "--eval-only needs the checkpoint" in proc.stderr


def test_frozen_bn_from_scratch_is_refused(use_synthetic_root, tmp_path):
    cfg = load_config(TINY, MICRO + ["MODEL.RESNETS.NORM", "FrozenBN", "OUTPUT_DIR", str(tmp_path)])
    trainer = Trainer(cfg)
    with pytest.raises(ValueError, match=r"FrozenBN layers have no source of weights: \['backbone.bottom_up.stem"):
        trainer.resume_or_load(resume=False)


def _distill_opts(tmp_path, extra=()):
    teacher_cfg = write_config(str(tmp_path / "teacher.yaml"), TINY, ["MODEL.FPN.OUT_CHANNELS", "64"])
    torch.manual_seed(0)
    teacher = build_model(load_config(teacher_cfg))
    torch.save({"model": teacher.state_dict()}, str(tmp_path / "teacher.pth"))
    return [*MICRO, *SHORT, "MODEL.META_ARCHITECTURE", "DistillGeneralizedRCNN",
            "DISTILL.TEACHER.CONFIG", teacher_cfg, "DISTILL.TEACHER.WEIGHTS", str(tmp_path / "teacher.pth"),
            "DISTILL.LOSSES", "['fitnet', 'logit_kd']", "DISTILL.FITNET.SCHEDULE.WARMUP_ITERS", "10", *extra]


def test_distillation_resumes(use_synthetic_root, tmp_path):
    out = str(tmp_path / "out")
    opts = _distill_opts(tmp_path, ["OUTPUT_DIR", out, "SOLVER.CHECKPOINT_PERIOD", "100"])
    cfg = load_config(TINY, opts + ["SOLVER.MAX_ITER", "3"])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    saved = torch.load(os.path.join(out, "model_final.pth"))
    assert saved["iteration"] == 2
    assert any(k.startswith("distillers.fitnet.adapters") for k in saved["model"])
    assert not any(k.startswith("teacher") for k in saved["model"])

    cfg = load_config(TINY, opts + ["SOLVER.MAX_ITER", "5"])
    resumed = Trainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 3
    model = resumed._trainer.model
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved["model"][k]), k
    assert resumed.optimizer.state_dict()["state"], "optimizer state restored"
    resumed.train()
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    last = [r for r in records if "kd_weight/fitnet" in r][-1]
    # The warm-up schedule continues where it stopped: iteration 4 of 10 -> factor 0.5.
    assert last["iteration"] == 4 and last["kd_weight/fitnet"] == pytest.approx(0.5)


def test_distillation_on_two_processes_with_gloo(synthetic_root, tmp_path):
    out = str(tmp_path / "ddp")
    proc = _run(["--config-file", TINY, "--num-gpus", "2", "--dist-url", "auto",
                 *_distill_opts(tmp_path, ["SOLVER.MAX_ITER", "2", "OUTPUT_DIR", out, "TEST.EVAL_PERIOD", "0"])],
                synthetic_root)
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    log = open(os.path.join(out, "log.txt")).read()
    assert "world size: 2" in log or "World size: 2" in log or "Rank of current process: 0. World size: 2" in log
    assert "loss_kd_fitnet" in log + proc.stdout + proc.stderr


def test_every_method_trains_on_synthetic_pages(use_synthetic_root, tmp_path):
    """A few real Trainer steps on generated pages with all registered losses at once."""
    from dla_kd.distill import DISTILLER_REGISTRY

    names = sorted(DISTILLER_REGISTRY._obj_map)
    out = str(tmp_path / "all")
    opts = _distill_opts(tmp_path, ["OUTPUT_DIR", out, "SOLVER.MAX_ITER", "3", "TEST.EVAL_PERIOD", "0",
                                    "DATASETS.TEST", "()", "DISTILL.LOSSES", str(names)])
    trainer = Trainer(load_config(TINY, opts))
    trainer.resume_or_load(resume=False)
    before = {k: v.clone() for k, v in trainer._trainer.model.state_dict().items()}
    trainer.train()
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    logged = set().union(*records)
    for name in names:
        assert f"kd_weight/{name}" in logged
        assert any(k.startswith(f"loss_kd_{name}") for k in logged), name
    last = records[-1]
    assert all(math.isfinite(v) for k, v in last.items() if k.startswith("loss_"))
    after = trainer._trainer.model.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in before.items() if k.startswith("distillers."))
    assert any(not torch.equal(after[k], v) for k, v in before.items() if k.startswith("student.backbone.inner"))
