"""``--resume`` with a changed config: every difference listed, changes of what is trained
refused unless ``--allow-config-change``, solver changes applied (the optimizer's LR follows the
new config), one config record per invocation; ``SOLVER.STEPS`` checked naming the keys."""
import json
import os
import subprocess
import sys

import pytest
import torch

import dla_kd  # noqa: F401
from dla_kd.engine import Trainer, load_config
from dla_kd.engine.optimizer import check_lr_steps
from dla_kd.engine.run_record import config_changes, write_record
from tiny_models import MICRO, REPO, TINY

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
SHORT = MICRO + ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.005", "SOLVER.WARMUP_ITERS", "1",
                 "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "1", "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0"]


def _train_net(root, flags, opts):
    env = dict(os.environ, DETECTRON2_DATASETS=root, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, TRAIN_NET, "--config-file", TINY, *flags, *SHORT, *opts], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=600)


def test_config_changes_are_classified():
    recorded = load_config(TINY, MICRO)
    new = load_config(TINY, MICRO + ["SOLVER.MAX_ITER", "7", "SOLVER.BASE_LR", "0.05", "DISTILL.LOSSES", "['logit_mse']",
                                     "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.3", "DATALOADER.NUM_WORKERS", "3",
                                     "SOLVER.OPTIMIZER", "AdamW", "OUTPUT_DIR", "elsewhere"])
    kinds = {c.key: c.kind for c in config_changes(recorded, new)}
    assert kinds == {"SOLVER.MAX_ITER": "solver", "SOLVER.BASE_LR": "solver", "DISTILL.LOSSES": "trained",
                     "SOLVER.OPTIMIZER": "trained", "MODEL.ROI_HEADS.SCORE_THRESH_TEST": "other",
                     "DATALOADER.NUM_WORKERS": "other"}
    # A key the record lacks (written before the key existed) counts with the code's default.
    old = recorded.clone()
    old.defrost()
    del old.DISTILL["LOSSES"]
    assert config_changes(old, recorded) == []


def test_resume_refuses_trained_changes_applies_solver_ones_and_keeps_every_record(synthetic_root, tmp_path):
    out = str(tmp_path / "run")
    first = _train_net(synthetic_root, [], ["SOLVER.MAX_ITER", "2", "OUTPUT_DIR", out])
    assert first.returncode == 0, first.stderr[-3000:]
    record = open(os.path.join(out, "config.yaml")).read()

    refused = _train_net(synthetic_root, ["--resume"], ["SOLVER.MAX_ITER", "4", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
                                                        "16", "OUTPUT_DIR", out])
    assert refused.returncode != 0
    assert "[trained] MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE: 32 -> 16" in refused.stderr
    assert "[solver] SOLVER.MAX_ITER: 2 -> 4" in refused.stderr and "--allow-config-change" in refused.stderr
    assert sorted(n for n in os.listdir(out) if n.startswith("config")) == ["config.yaml"]
    assert not os.path.exists(os.path.join(out, "train.lock"))

    solver = _train_net(synthetic_root, ["--resume"], ["SOLVER.MAX_ITER", "4", "SOLVER.BASE_LR", "0.01",
                                                       "OUTPUT_DIR", out])
    assert solver.returncode == 0, solver.stderr[-3000:]
    assert "SOLVER.BASE_LR: 0.005 -> 0.01" in open(os.path.join(out, "log.txt")).read()
    assert open(os.path.join(out, "config.yaml")).read() == record  # the first start's record, untouched
    resumed = load_config(os.path.join(out, "config_resume_1.yaml"))
    assert resumed.SOLVER.BASE_LR == 0.01 and resumed.SOLVER.MAX_ITER == 4
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    assert rows[-1]["iteration"] == 3 and rows[-1]["lr"] == pytest.approx(0.01)  # the optimizer follows the config
    assert torch.load(os.path.join(out, "model_final.pth"))["iteration"] == 3

    allowed = _train_net(synthetic_root, ["--resume", "--allow-config-change"],
                         ["SOLVER.MAX_ITER", "5", "SOLVER.BASE_LR", "0.01", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
                          "OUTPUT_DIR", out])
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert load_config(os.path.join(out, "config_resume_2.yaml")).MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE == 16
    assert load_config(os.path.join(out, "config_resume_1.yaml")).MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE == 32
    assert torch.load(os.path.join(out, "model_final.pth"))["iteration"] == 4


def test_resumed_optimizer_takes_the_new_solver_settings(use_synthetic_root, tmp_path):
    opts = SHORT + ["OUTPUT_DIR", str(tmp_path)]
    trainer = Trainer(load_config(TINY, opts + ["SOLVER.MAX_ITER", "2"]))
    trainer.resume_or_load(resume=False)
    trainer.train()
    resumed = Trainer(load_config(TINY, opts + ["SOLVER.MAX_ITER", "4", "SOLVER.BASE_LR", "0.02",
                                                "SOLVER.WEIGHT_DECAY", "0.001"]))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2 and resumed.optimizer.state_dict()["state"]  # momentum buffers kept
    groups = resumed.optimizer.param_groups
    assert all(g["lr"] == pytest.approx(0.02) and g["initial_lr"] == pytest.approx(0.02) for g in groups)
    assert {g["weight_decay"] for g in groups} <= {0.0, 0.001} and any(g["weight_decay"] == 0.001 for g in groups)
    assert resumed.scheduler.base_lrs == [pytest.approx(0.02)] * len(groups)


def test_lr_steps_past_the_end_are_refused_naming_the_keys(synthetic_root, tmp_path):
    for steps in ("(2,)", "(1, 1)", "(0,)"):
        with pytest.raises(ValueError, match=r"SOLVER.STEPS .* do not fit SOLVER.MAX_ITER 2"):
            check_lr_steps(load_config(TINY, ["SOLVER.MAX_ITER", "2", "SOLVER.STEPS", steps]))
    check_lr_steps(load_config(TINY, ["SOLVER.MAX_ITER", "2"]))  # (220, 280): past the end, ignored as in Detectron2
    out = tmp_path / "run"
    proc = _train_net(synthetic_root, [], ["SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1, 2)", "OUTPUT_DIR", str(out)])
    assert proc.returncode != 0 and "SOLVER.STEPS (1, 2) do not fit SOLVER.MAX_ITER 2" in proc.stderr
    assert os.listdir(out) == []  # refused before anything was written (the lock released)


def test_config_record_is_written_atomically(tmp_path, monkeypatch):
    path = str(tmp_path / "config.yaml")
    write_record(load_config(TINY), path)
    before = open(path).read()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_record(load_config(TINY, ["SOLVER.BASE_LR", "0.5"]), path)
    assert open(path).read() == before and os.listdir(tmp_path) == ["config.yaml"]


def test_resume_with_other_trainable_parameters_names_the_checkpoint(use_synthetic_root, tmp_path):
    """Allowed (--allow-config-change) but impossible: the checkpoint's optimizer state was made
    for other parameters. The error says which checkpoint and what to do instead of torch's bare
    "parameter group doesn't match"."""
    opts = SHORT + ["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "1"]
    trainer = Trainer(load_config(TINY, opts + ["MODEL.BACKBONE.FREEZE_AT", "2"]))
    trainer.resume_or_load(resume=False)
    trainer.train()
    unfrozen = Trainer(load_config(TINY, opts + ["MODEL.BACKBONE.FREEZE_AT", "0", "SOLVER.MAX_ITER", "2"]))
    with pytest.raises(ValueError, match=r"optimizer state of \S+model_final.pth does not fit this model.*MODEL.WEIGHTS"):
        unfrozen.resume_or_load(resume=True)
