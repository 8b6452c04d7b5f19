"""Configs write where the documented commands read: every plain config under ``configs/<dataset>/``
trains into an ``OUTPUT_DIR`` of its own, and every distillation config reads its teacher from the
``model_final.pth`` its teacher config writes (so "train the teacher, then distil" works as
written, without a path on the command line)."""
import os
from collections import Counter

import pytest

import dla_kd  # noqa: F401
from dla_kd.engine import load_config
from tiny_models import REPO

CONFIG_DIR = os.path.join(REPO, "configs")
CONFIGS = sorted(
    os.path.relpath(os.path.join(d, f), REPO)
    for d, _, files in os.walk(CONFIG_DIR) for f in files
    if f.endswith(".yaml") and not f.startswith("Base-") and os.path.dirname(os.path.join(d, f)) != CONFIG_DIR
)
DEFAULT_OUTPUT_DIR = "./output"
# The KD benchmark's recipes (while they are under configs/): its driver gives each run a folder.
STUDY_RECIPES = "configs/synthetic/bench/distill/"


def _load(path):
    return load_config(os.path.join(REPO, path), freeze=False)


@pytest.fixture(scope="module")
def output_dirs():
    return {path: _load(path).OUTPUT_DIR for path in CONFIGS}


def test_every_config_has_an_output_dir_of_its_own(output_dirs):
    missing = [p for p, out in output_dirs.items() if out in ("", DEFAULT_OUTPUT_DIR, "output")]
    assert not missing, f"configs without an OUTPUT_DIR of their own: {missing}"
    counts = Counter(out for p, out in output_dirs.items()
                     if not (p.startswith(STUDY_RECIPES) and not os.path.basename(p).startswith("recommended_")))
    shared = {out: n for out, n in counts.items() if n > 1}
    assert not shared, f"OUTPUT_DIRs shared by several configs: {shared}"


def test_plain_configs_write_under_output_slash_their_dataset(output_dirs):
    """configs/<dataset>/<name>.yaml -> output/<dataset>/<name> (the layout the docs describe)."""
    wrong = {}
    for path, out in output_dirs.items():
        parts = path.split(os.sep)
        if len(parts) == 3:  # configs/<dataset>/<name>.yaml
            expected = f"output/{parts[1]}/{parts[2][:-5]}"
            if parts[1] in ("doclaynet", "publaynet", "prima") and out != expected:
                wrong[path] = (out, expected)
    assert not wrong, wrong


@pytest.mark.parametrize("path", [p for p in CONFIGS if "distill" in p.split(os.sep)[-2:-1] or "/bench/distill/" in p])
def test_distillation_config_reads_its_teachers_model_final(path):
    cfg = _load(path)
    assert cfg.MODEL.META_ARCHITECTURE == "DistillGeneralizedRCNN", path
    teacher = _load(cfg.DISTILL.TEACHER.CONFIG)
    assert teacher.OUTPUT_DIR not in ("", DEFAULT_OUTPUT_DIR), cfg.DISTILL.TEACHER.CONFIG
    assert cfg.DISTILL.TEACHER.WEIGHTS == os.path.join(teacher.OUTPUT_DIR, "model_final.pth"), (
        f"{path}: DISTILL.TEACHER.WEIGHTS {cfg.DISTILL.TEACHER.WEIGHTS!r} is not where "
        f"{cfg.DISTILL.TEACHER.CONFIG} trains ({teacher.OUTPUT_DIR}/model_final.pth)")


def _documented_commands():
    from doc_commands import read_blocks

    pages = [os.path.join(REPO, "README.md"), os.path.join(REPO, "datasets", "README.md")]
    for folder in ("docs", "projects"):
        for d, _, files in os.walk(os.path.join(REPO, folder)):
            pages += [os.path.join(d, f) for f in files if f.endswith(".md")]
    for page in sorted(pages):
        for block in read_blocks(page):
            yield from block.commands


REAL_DATASETS = ("configs/doclaynet/", "configs/publaynet/", "configs/prima/")
STUDENT_INIT = ("MODEL.WEIGHTS", "MODEL.TIMM.PRETRAINED_PATH")


def test_documented_distillation_commands_name_the_students_initial_weights():
    """A distillation run on a real dataset starts its student from pretrained weights: a command
    that trains one (not --resume, not --eval-only) names them, or it stops at the FrozenBN check
    (or trains a ViT student from random weights)."""
    wrong = []
    for command in _documented_commands():
        words = command.text.split()
        if "--config-file" not in words or "--eval-only" in words or "--resume" in words:
            continue
        if not any(w.endswith(("train_net.py", "train_mydocs.py", "submit_slurm.py")) for w in words):
            continue
        config = words[words.index("--config-file") + 1]
        if "/distill/" in config and config.startswith(REAL_DATASETS) and not any(k in words for k in STUDENT_INIT):
            wrong.append(f"{command.where()}: {command.text[:120]}")
    assert not wrong, "distillation commands without the student's initial weights:\n" + "\n".join(wrong)
