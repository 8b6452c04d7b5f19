"""Helpers of the tests that run the documentation's commands (tests/test_docs*.py): the overrides
that make a documented run small, stand-ins for Detectron2's ImageNet files, a datasets folder
shaped like DocLayNet's, a workspace laid out as a user's clone, and the runner of a block.

The overrides only make a run small (CPU, one iteration of one image, 128-px images, few RoIs; the
learning rate scaled to the batch of 1) or skip what a one-iteration teacher cannot pass (its AP
check): a documented command keeps its config, weights and datasets. The one change made to a
command's text is its number of processes (``on_this_cpu``: ``--num-gpus 8`` runs as 2 gloo
processes on the 2 cores).
"""
import json
import os
import pickle
import re
import shutil
import sys
from dataclasses import replace
from typing import Callable, List, Optional, Sequence

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from PIL import Image

from dla_kd.config import get_dla_kd_cfg
from dla_kd.data.synthetic import generate_dataset
from doc_commands import Block, Command, make_workspace, run_command
from tiny_models import REPO

# --- overrides: small, CPU ------------------------------------------------------------------------
TEST_SIZE = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "160",
             "MODEL.RPN.POST_NMS_TOPK_TEST", "64"]
TRAIN_1 = TEST_SIZE + [
    "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "1", "SOLVER.BASE_LR", "0.00125",
    "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "160",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "DATALOADER.NUM_WORKERS", "0",
]
# The teacher of a one-iteration run is at chance: its AP check would (rightly) stop distillation.
DISTILL_1 = TRAIN_1 + ["DISTILL.TEACHER.SANITY_CHECK.ENABLED", "False"]

# --- processes: --num-gpus N runs as CPU_PROCESSES gloo processes --------------------------------
CPU_PROCESSES = 2
NUM_GPUS = re.compile(r"(?<!\S)--num-gpus[ =](?P<n>\d+)(?!\S)")


def on_this_cpu(command: Command) -> Command:
    """``command`` with ``--num-gpus N`` (N > ``CPU_PROCESSES``) as ``--num-gpus CPU_PROCESSES``: as
    many gloo processes as this machine has cores. Nothing else of the command changes."""
    found = list(NUM_GPUS.finditer(command.text))
    assert len(found) <= 1, f"{command.where()}: --num-gpus given {len(found)} times"
    if not found or int(found[0].group("n")) <= CPU_PROCESSES:
        return command
    return replace(command, text=NUM_GPUS.sub(f"--num-gpus {CPU_PROCESSES}", command.text))


def per_process_batch(overrides: Sequence[str]) -> list:
    """``overrides`` with one image per process (``SOLVER.IMS_PER_BATCH`` = ``CPU_PROCESSES``)."""
    return list(overrides) + ["SOLVER.IMS_PER_BATCH", str(CPU_PROCESSES)]


# --- files ---------------------------------------------------------------------------------------
MSRA_BRANCH = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}


def _msra_name(module: str) -> str:
    """Detectron2 ResNet module name -> MSRA blob prefix ("res3.1.conv2" -> "res3_1_branch2b")."""
    if module == "stem.conv1":
        return "conv1"
    stage, block, conv = module.split(".")
    return f"{stage}_{block}_{MSRA_BRANCH[conv]}"


def imagenet_standin(path: str, depth: int, seed: int = 0) -> str:
    """A stand-in for Detectron2's ImageNetPretrained/MSRA/R-<depth>.pkl: the same blob names
    (conv weights ``*_w``, frozen BatchNorm as scale ``*_bn_s`` and shift ``*_bn_b``), random
    conv weights, and BatchNorm folded from statistics measured on random pixel-scale pages, so
    that a detector built on it starts with finite, moderate losses."""
    cfg = get_dla_kd_cfg()
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.NORM = depth, "BN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    torch.manual_seed(seed)
    net = build_resnet_backbone(cfg, ShapeSpec(channels=3)).train()
    norms = {name[: -len(".norm")]: m for name, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    for bn in norms.values():
        bn.momentum = None  # cumulative average over the calibration batches
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, 3, 1, 1)
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(2, 3, 128, 128) * 255 - mean)
    blobs = {}
    for module, bn in norms.items():
        prefix = "res_conv1" if module == "stem.conv1" else _msra_name(module)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        blobs[prefix + "_bn_s"] = scale.detach().numpy()
        blobs[prefix + "_bn_b"] = (bn.bias - bn.running_mean * scale).detach().numpy()
        conv = net.get_submodule(module)
        blobs[_msra_name(module) + "_w"] = conv.weight.detach().numpy()
    with open(path, "wb") as f:
        pickle.dump(blobs, f)
    return path


def doclaynet_layout(root: str, pages: dict, size=(256, 256)) -> None:
    """``root/DocLayNet/COCO/<split>.json`` + ``root/DocLayNet/PNG/`` as DocLayNet_core.zip unpacks,
    with synthetic DocLayNet-style pages (``pages``: split -> number of pages)."""
    coco, png = os.path.join(root, "DocLayNet", "COCO"), os.path.join(root, "DocLayNet", "PNG")
    os.makedirs(coco), os.makedirs(png)
    scratch = os.path.join(root, ".synthetic")
    for seed, (split, n) in enumerate(pages.items()):
        data = json.load(open(generate_dataset("doclaynet", n, scratch, seed=seed, split=split,
                                               page_size=size, show_progress=False)))
        for image in data["images"]:
            name = f"{split}_{os.path.basename(image['file_name'])}"
            shutil.copy(os.path.join(scratch, split, image["file_name"]), os.path.join(png, name))
            image["file_name"] = name
        with open(os.path.join(coco, f"{split}.json"), "w") as f:
            json.dump(data, f)
    shutil.rmtree(scratch)


# --- a user's clone -------------------------------------------------------------------------------
ENV = {"DETECTRON2_DATASETS": "datasets", "OMP_NUM_THREADS": "1", "DLA_KD_PAGE_CACHE": ""}
PDFS = ["report.pdf", "datasets/mydocs/annual_report.pdf", "datasets/mydocs/scans/letter.pdf"]


def make_pdf(path: str, pages_dir: str, n: int) -> str:
    """A PDF of ``n`` synthetic pages (1 px = 1 pt)."""
    files = sorted(os.listdir(pages_dir))[:n]
    images = [Image.open(os.path.join(pages_dir, f)).convert("RGB") for f in files]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    images[0].save(path, "PDF", resolution=72.0, save_all=True, append_images=images[1:])
    return path


def clone_workspace(path: str, synthetic_root: str, imagenet_dir: str) -> str:
    """``path`` laid out as a user's clone where the docs' commands run: ``configs``/``tools``/
    ``scripts`` of this repository, a ``datasets/`` folder shaped like the real one
    (``DocLayNet/COCO/{train,val,test}.json`` + ``DocLayNet/PNG/`` with 3/2/2 synthetic pages, the
    quick start's synthetic split from ``synthetic_root``), ``imagenet/`` (``imagenet_dir``: the
    stand-ins of ``imagenet_standin``) and the PDFs of ``PDFS``."""
    ws = make_workspace(path, REPO, links=("configs", "tools", "scripts"))
    datasets = os.path.join(ws, "datasets")
    doclaynet_layout(datasets, {"train": 3, "val": 2, "test": 2})
    os.makedirs(os.path.join(datasets, "synthetic"))
    os.symlink(os.path.join(synthetic_root, "synthetic", "doclaynet"), os.path.join(datasets, "synthetic", "doclaynet"))
    png = os.path.join(datasets, "DocLayNet", "PNG")
    for pdf, n in zip(PDFS, (2, 2, 1)):
        make_pdf(os.path.join(ws, pdf), png, n)
    os.symlink(imagenet_dir, os.path.join(ws, "imagenet"))
    return ws


def run_block(block: Block, overrides, cwd: str, writes: Sequence[str] = (), env: Optional[dict] = None,
              timeout: float = 900, rewrite: Optional[Callable[[Command], Command]] = None):
    """Run every command of ``block`` in ``cwd`` (environment ``ENV`` updated by ``env``) with
    ``overrides``: one list for every command, or one list per command; ``rewrite`` (e.g.
    ``on_this_cpu``) may change each command first. A block of another language is written to
    ``cwd/<its name>`` as shown. Then checks that ``writes`` (relative to ``cwd``) exist. Returns
    the completed processes."""
    if not block.is_shell:
        with open(os.path.join(cwd, block.name), "w") as f:
            f.write(block.source)
        return []
    per_command = overrides if overrides and isinstance(overrides[0], (list, tuple)) else [overrides] * len(block.commands)
    assert len(per_command) == len(block.commands), (
        f"{block.path} block {block.name!r}: overrides for {len(per_command)} of its {len(block.commands)} commands")
    procs = [run_command(rewrite(command) if rewrite else command, extra, cwd=cwd, env={**ENV, **(env or {})},
                         timeout=timeout)
             for command, extra in zip(block.commands, per_command)]
    missing = [f for f in writes if not os.path.exists(os.path.join(cwd, f))]
    assert not missing, f"{block.path} block {block.name!r} ran but did not write {missing}"
    return procs


# --- commands that cannot run here: what they would run ---------------------------------------------
RECORDER = """#!{python}
# Stand-in for {program}: records the call (arguments and DLA_KD_* variables) and runs nothing.
import json, os, sys
PROGRAM = {program_name!r}
if PROGRAM is None and sys.argv[1:2] == ["-c"]:  # a script's own one-liner (reads a JSON file): runs
    os.execv({python!r}, [{python!r}] + sys.argv[1:])
with open(os.environ["DOC_CALLS"], "a") as f:
    argv = ([PROGRAM] if PROGRAM else []) + sys.argv[1:]
    f.write(json.dumps({{"argv": argv, "env": {{k: v for k, v in os.environ.items() if k.startswith("DLA_KD_")}}}}) + "\\n")
"""
# Programs of the machine a documented script may call that must not run in a test, and what their
# stand-ins do: record the call (checked like a tool's), run the rest of the line, or answer nothing
# (the package manager: "not installed", so a script's install path is always the one recorded).
STAND_IN_PROGRAMS = {"git": "record", "apt-get": "record", "sudo": 'exec "$@"',
                     "dpkg-query": "exit 1", "dpkg": "exit 0"}
STAND_IN_BIN = ".doc_bin"


def _executable(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)


def recording_workspace(path: str, links: Sequence[str] = ("configs", "tools", "scripts"),
                        copies: Sequence[str] = ("projects",)) -> str:
    """``make_workspace`` whose ``.venv/bin/python`` only records each call (``recorded_calls``):
    a documented command (or a script it runs) goes through the shell as written, globs and
    variables expanded, and nothing trains; ``python -c`` one-liners of a script run. The programs
    of ``STAND_IN_PROGRAMS`` (git, the package manager) are stand-ins on the commands' PATH.
    ``copies`` are folders of the repository mirrored as real folders of links to its files, so
    that what a study writes into them (its published results) is left in the workspace."""
    os.makedirs(os.path.join(path, ".venv", "bin"))
    _executable(os.path.join(path, ".venv", "bin", "python"),
                RECORDER.format(python=sys.executable, program="the clone's interpreter", program_name=None))
    os.makedirs(os.path.join(path, STAND_IN_BIN))
    for name, action in STAND_IN_PROGRAMS.items():
        text = (RECORDER.format(python=sys.executable, program=name, program_name=name) if action == "record"
                else f"#!/bin/sh\n# Stand-in for {name}.\n{action}\n")
        _executable(os.path.join(path, STAND_IN_BIN, name), text)
    for name in copies:
        shutil.copytree(os.path.join(REPO, name), os.path.join(path, name), copy_function=os.symlink,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return make_workspace(path, REPO, links)


def recorded_calls(command: Command, ws: str, env: Optional[dict] = None) -> List[dict]:
    """Run ``command`` exactly as written in the ``recording_workspace`` ``ws``: the calls of
    ``.venv/bin/python`` (and of the recording ``STAND_IN_PROGRAMS``) it made, in order, each
    ``{"argv": [script or program, args...], "env": {DLA_KD_*}}``."""
    log = os.path.join(ws, ".doc_calls.jsonl")
    if os.path.exists(log):
        os.remove(log)
    path = os.path.join(ws, STAND_IN_BIN) + os.pathsep + os.environ.get("PATH", "")
    run_command(command, cwd=ws, env={"DETECTRON2_DATASETS": "datasets", **(env or {}), "DOC_CALLS": log, "PATH": path})
    if not os.path.exists(log):
        return []
    with open(log) as f:
        return [json.loads(line) for line in f]
