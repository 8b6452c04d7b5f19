"""The command blocks of docs/training.md, docs/distributed.md, docs/deployment.md,
docs/distillation.md and docs/install.md, exactly as written (tests/doc_commands.py), with the
small overrides of tests/docs_fixtures.py appended, in a workspace laid out as a user's clone
(conftest's ``doc_workspace``, the DocLayNet teacher of docs/getting_started.md where a page
starts from it).

Commands that ask for several GPUs run with ``--num-gpus 2`` (``on_this_cpu``: two gloo processes,
one image each). What cannot run on one CPU machine is checked instead, and the page says so: the
multi-machine commands are parsed by ``tools/train_net.py``'s parser and their config, keys and
files checked; the SLURM submission runs as written against a stand-in ``sbatch``, and each
node's command of the job is checked the same way; ``pip install`` lines are checked for the
extras they name.

``OVERRIDES`` names every block of those pages in order (tests/test_docs.py checks that no block
is left out): for a block, the overrides of its commands (one list for all, or one per command),
a function ``(block, workspace)`` that runs or checks it, or None (tests/test_docs.py checks it).
"""
import ast
import json
import os
import pickle
import shlex
import shutil
from dataclasses import replace
from importlib import metadata

import pytest
import torch
from packaging.utils import canonicalize_name

import dla_kd  # noqa: F401
from dla_kd.config import load_config
from dla_kd.distill.base import DISTILLER_REGISTRY
from dla_kd.engine.launch import resolve_dist_url
from doc_commands import doc_blocks, make_workspace, run_command, split_commands
from docs_fixtures import (
    CPU_PROCESSES, DISTILL_1, ENV, TEST_SIZE, TRAIN_1, on_this_cpu, per_process_batch, run_block,
)
from tiny_models import REPO, load_tool

TRAIN_2 = per_process_batch(TRAIN_1)
DISTILL_2 = per_process_batch(DISTILL_1)
SIMKD = "output/doclaynet/distill/simkd_R_101_to_R_50"


# --- what cannot run here: checks -----------------------------------------------------------------
def setup_extras():
    """setup.py's ``extras_require`` (read, not run)."""
    tree = ast.parse(open(os.path.join(REPO, "setup.py")).read())
    [extras] = [k.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                for k in node.keywords if k.arg == "extras_require"]
    return ast.literal_eval(extras)


def check_pip_install(command):
    """A documented ``pip install``: parses, and every ``-e .[extras]`` names this repository and
    extras of setup.py."""
    argv = shlex.split(command.text)
    assert argv[:2] == ["pip", "install"] and len(argv) > 2, command.where()
    extras = setup_extras()
    for i, arg in enumerate(argv):
        if arg == "-e":
            path, _, named = argv[i + 1].partition("[")
            assert path == "." and os.path.isfile(os.path.join(REPO, "setup.py")), command.where()
            unknown = set(named.rstrip("]").split(",")) - set(extras)
            assert not unknown, f"{command.where()}: setup.py has no extras {sorted(unknown)} (it has {sorted(extras)})"


def check_pip_installs(block, ws):
    for command in block.commands:
        check_pip_install(command)


def check_train_net_args(argv, ws, where):
    """``tools/train_net.py`` arguments parsed by its own parser; the config, its ``KEY VALUE``
    overrides (unknown keys fail to load) and the files they name exist in ``ws`` (no MODEL.WEIGHTS:
    trained from scratch)."""
    args = load_tool("train_net").build_parser().parse_args(argv)
    path = os.path.join(ws, args.config_file)
    assert os.path.isfile(path), f"{where}: no config {args.config_file}"
    cfg = load_config(path, args.opts, freeze=False)
    files = [cfg.MODEL.WEIGHTS] * bool(cfg.MODEL.WEIGHTS) + ([cfg.DISTILL.TEACHER.CONFIG, cfg.DISTILL.TEACHER.WEIGHTS]
                                   if cfg.MODEL.META_ARCHITECTURE == "DistillGeneralizedRCNN" else [])
    missing = [f for f in files if not os.path.isfile(os.path.join(ws, f))]
    assert not missing, f"{where}: the command's files do not exist: {missing}"
    return args


def check_machine_commands(block, ws):
    """The commands of one job, one per machine: train_net's arguments, one machine rank each, the
    same rendezvous (kept as given) and otherwise the same command."""
    runs = []
    for command in block.commands:
        argv = shlex.split(command.text)
        assert argv[:2] == [".venv/bin/python", "tools/train_net.py"], command.where()
        args = check_train_net_args(argv[2:], ws, command.where())
        assert resolve_dist_url(args.dist_url, args.num_machines, "auto") == args.dist_url
        runs.append((args, command.text.replace(f"--machine-rank {args.machine_rank}", "--machine-rank R")))
    assert sorted(a.machine_rank for a, _ in runs) == list(range(len(runs)))
    assert {a.num_machines for a, _ in runs} == {len(runs)} and len({a.dist_url for a, _ in runs}) == 1
    assert len({text for _, text in runs}) == 1, "the machines' commands differ in more than the machine rank"


def submit_with_stand_in_sbatch(block, ws):
    """The pip line checked; the submission run as written, to a stand-in ``sbatch`` (job 4242): its
    sbatch script asks what the page says, and each node's command is a valid train_net command."""
    pytest.importorskip("submitit", reason="submitit (the optional extra dla-kd[slurm]) is not installed")
    pip, submit = block.commands
    check_pip_install(pip)
    bin_dir = os.path.join(ws, "stand-in-bin")
    os.makedirs(bin_dir)
    for name, body in (("sbatch", 'echo "Submitted batch job 4242"'), ("srun", "exit 1")):
        with open(os.path.join(bin_dir, name), "w") as f:
            f.write(f"#!/bin/sh\n{body}\n")
        os.chmod(os.path.join(bin_dir, name), 0o755)
    proc = run_command(submit, cwd=ws, env={**ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert "submitted job 4242 (2 node(s) x 8 process(es))" in proc.stdout, proc.stdout
    job_dir = os.path.join(ws, "output", "slurm", "4242")
    script = open(os.path.join(job_dir, "4242_submission.sh")).read()
    for line in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=8", "--partition=gpu", "--time=2880",
                 "--signal=USR2@120"):
        assert f"#SBATCH {line}\n" in script, line
    with open(os.path.join(job_dir, "4242_submitted.pkl"), "rb") as f:
        job = pickle.load(f).function
    argv = shlex.split(submit.text)
    assert job.argv == argv[argv.index("--config-file"):]  # train_net's arguments, passed on unchanged
    for node in range(2):
        node_argv = job.node_command(2, node, "gpu-a", "4242")[2:]
        args = check_train_net_args(node_argv, ws, f"{submit.where()} (node {node})")
        assert (args.num_machines, args.machine_rank, args.num_gpus) == (2, node, 8)


def check_distill_config(block, ws):
    """The page's example config, saved beside the DocLayNet distillation configs, loads; its losses
    are registered and it reads the teacher where the teacher's config trains it."""
    configs = os.path.join(ws, "configs")
    shutil.copytree(os.path.join(REPO, "configs"), configs)
    path = os.path.join(configs, "doclaynet", "distill", "my_distillation.yaml")
    with open(path, "w") as f:
        f.write(block.source)
    cfg = load_config(path, freeze=False)
    assert cfg.MODEL.META_ARCHITECTURE == "DistillGeneralizedRCNN" and cfg.MODEL.RESNETS.DEPTH == 50
    assert all(name in DISTILLER_REGISTRY for name in cfg.DISTILL.LOSSES), cfg.DISTILL.LOSSES
    teacher = load_config(os.path.join(ws, cfg.DISTILL.TEACHER.CONFIG), freeze=False)
    assert cfg.DISTILL.TEACHER.WEIGHTS == os.path.join(teacher.OUTPUT_DIR, "model_final.pth")


def run_python(block, ws):
    """A Python snippet of the page, saved as its name and run."""
    run_block(block, None, ws)
    run_command(f".venv/bin/python {block.name}", cwd=ws, env=ENV)


# --- the blocks -----------------------------------------------------------------------------------
OVERRIDES = {
    "docs/training.md": {
        "train": [TRAIN_2, TRAIN_2 + ["SOLVER.MAX_ITER", "2"], TEST_SIZE],  # train, --resume one more, evaluate
    },
    "docs/distillation.md": {
        "distill-config.yaml": check_distill_config,
    },
    "docs/distributed.md": {
        "one-machine": DISTILL_2,
        "several-machines": check_machine_commands,
        "slurm": submit_with_stand_in_sbatch,
    },
    "docs/deployment.md": {
        "export-predict": [TEST_SIZE, []],  # an exported model keeps the test size it was exported with
        "predictor.py": run_python,
        "budget": TEST_SIZE,
        "int8": [TEST_SIZE, []],
    },
    "docs/install.md": {
        "setup": None,  # the CI's own commands (tests/test_docs.py: test_setup_is_what_ci_runs)
        "freeze-constraints": [],
        "own-detectron2": check_pip_installs,
    },
}
# (page, block) -> files (relative to the workspace) the block must have written
WRITES = {
    ("docs/training.md", "train"): [
        "output/doclaynet/mask_rcnn_R_50_FPN_3x/model_final.pth",
        "output/doclaynet/mask_rcnn_R_50_FPN_3x/eval_doclaynet_test__model_final.json"],
    ("docs/distributed.md", "one-machine"): ["output/doclaynet/distill/recommended_R_101_to_R_50/model_final.pth"],
    ("docs/deployment.md", "export-predict"): ["export/simkd/model.onnx", "pred/summary.json"],
    ("docs/deployment.md", "budget"): ["export/fast/export_info.json", "pred/fast/summary.json"],
    ("docs/deployment.md", "int8"): ["export/int8/model.int8.onnx", "pred/int8/summary.json"],
    ("docs/install.md", "freeze-constraints"): ["constraints.txt"],
}


def run_page(doc: str, ws: str):
    """Every block of ``doc`` that ``OVERRIDES`` names, in order, in ``ws``."""
    blocks = doc_blocks(os.path.join(REPO, doc), named_only=True)
    for name, how in OVERRIDES[doc].items():
        if callable(how):
            how(blocks[name], ws)
        elif how is not None:
            run_block(blocks[name], how, ws, WRITES.get((doc, name), ()), rewrite=on_this_cpu)


def summary(ws, folder):
    with open(os.path.join(ws, folder, "summary.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def simkd_student(doclaynet_teacher):
    """The workspace with a SimKD student of the teacher (one iteration), which docs/deployment.md deploys."""
    run_command(".venv/bin/python tools/train_net.py --config-file configs/doclaynet/distill/simkd_R_101_to_R_50.yaml "
                "MODEL.WEIGHTS imagenet/R-50.pkl", DISTILL_1, cwd=doclaynet_teacher, env=ENV)
    scans = os.path.join(doclaynet_teacher, "scans")
    os.makedirs(scans)
    png = os.path.join(doclaynet_teacher, "datasets", "DocLayNet", "PNG")
    for name in sorted(os.listdir(png))[:2]:
        shutil.copy(os.path.join(png, name), scans)
    return doclaynet_teacher


# --- the tests ------------------------------------------------------------------------------------
def test_on_this_cpu_changes_only_the_number_of_processes():
    [command] = doc_blocks(os.path.join(REPO, "docs", "distributed.md"), named_only=True)["one-machine"].commands
    assert on_this_cpu(command).text == command.text.replace("--num-gpus 8", f"--num-gpus {CPU_PROCESSES}")
    assert on_this_cpu(command).where() == command.where()
    eval_only = doc_blocks(os.path.join(REPO, "docs", "training.md"), named_only=True)["train"].commands[2]
    assert on_this_cpu(eval_only) is eval_only


def test_checks_of_commands_not_run_here_catch_renames(tmp_path):
    """The checks that stand in for running catch a renamed config, an unknown key, machines that
    disagree, a missing file and an unknown extra."""
    ws = make_workspace(str(tmp_path), REPO, links=("configs", "tools"))
    block = doc_blocks(os.path.join(REPO, "docs", "distributed.md"), named_only=True)["several-machines"]
    files = ["imagenet/R-50.pkl", "output/doclaynet/mask_rcnn_R_101_FPN_3x/model_final.pth"]
    for name in files:
        os.makedirs(os.path.dirname(os.path.join(ws, name)), exist_ok=True)
        open(os.path.join(ws, name), "w").close()
    check_machine_commands(block, ws)
    *first, last = block.commands
    config = "configs/doclaynet/distill/recommended_R_101_to_R_50.yaml"
    for old, new, error in ((config, "configs/doclaynet/distill/renamed.yaml", "no config"),
                            ("MODEL.WEIGHTS", "MODEL.WEIGHT", "Non-existent key"),
                            ("--machine-rank 1", "--machine-rank 0", "assert"),
                            ("tcp://10.0.0.1:29500 MODEL", "tcp://10.0.0.1:29500 SOLVER.BASE_LR 0.1 MODEL", "differ")):
        # the second machine's command changed
        changed = replace(block, commands=[*first, replace(last, text=last.text.replace(old, new))])
        with pytest.raises((AssertionError, KeyError), match=error):
            check_machine_commands(changed, ws)
    os.remove(os.path.join(ws, files[0]))
    with pytest.raises(AssertionError, match="files do not exist"):
        check_machine_commands(block, ws)
    [pip] = split_commands("pip install -e '.[export,slurmm]'")
    with pytest.raises(AssertionError, match="no extras"):
        check_pip_install(pip)


def test_training_commands(doc_workspace):
    ws = doc_workspace
    run_page("docs/training.md", ws)
    run = os.path.join(ws, "output", "doclaynet", "mask_rcnn_R_50_FPN_3x")
    log = open(os.path.join(run, "log.txt")).read()
    assert f"World size: {CPU_PROCESSES}" in log and os.path.isfile(os.path.join(run, "log.txt.rank1"))
    # --resume continued the first run to the new MAX_ITER: one more step, not a new run
    assert "Starting training from iteration 1" in log
    assert torch.load(os.path.join(run, "model_final.pth"), map_location="cpu")["iteration"] == 1
    with open(os.path.join(run, "metrics.json")) as f:
        assert [row["iteration"] for row in map(json.loads, f) if "loss_cls" in row] == [0, 1]


def test_distributed_commands(doclaynet_teacher):
    ws = doclaynet_teacher
    run_page("docs/distributed.md", ws)
    run = os.path.join(ws, "output", "doclaynet", "distill", "recommended_R_101_to_R_50")
    assert f"World size: {CPU_PROCESSES}" in open(os.path.join(run, "log.txt")).read()
    assert os.path.isfile(os.path.join(run, f"log.txt.rank{CPU_PROCESSES - 1}"))
    with open(os.path.join(run, "metrics.json")) as f:
        assert any(k.startswith("loss_kd_") for line in f for k in json.loads(line))


def test_deployment_commands(simkd_student):
    ws = simkd_student
    run_page("docs/deployment.md", ws)
    for folder, pages in (("pred", 4), ("pred/python", 2), ("pred/fast", 2), ("pred/int8", 2)):
        done = summary(ws, folder)
        assert done["failures"] == [] and done["pages"] == pages, (folder, done)
    info = json.load(open(os.path.join(ws, "export", "fast", "export_info.json")))
    assert info["budget"]["preset"] == "fast", info["budget"]
    info = json.load(open(os.path.join(ws, "export", "int8", "export_info.json")))
    assert info["file"] == "model.int8.onnx" and info["int8_check"]["passed"], info.get("int8_check")


def test_distillation_config(tmp_path):
    run_page("docs/distillation.md", str(tmp_path))


def test_install_commands(tmp_path):
    """freeze_constraints.py rewrites the constraints of a clone (here a copy: the repository's file
    stays as it is): every requirement pinned to the version installed."""
    ws = make_workspace(str(tmp_path), REPO, links=("scripts",))
    shutil.copy(os.path.join(REPO, "requirements.txt"), ws)
    run_page("docs/install.md", ws)
    with open(os.path.join(ws, "constraints.txt")) as f:
        pins = dict(line.strip().split("==") for line in f if "==" in line and not line.startswith("#"))
    pins = {canonicalize_name(name): version for name, version in pins.items()}
    required = [r.name for r in load_tool("freeze_constraints", "scripts").read_requirements(
        os.path.join(REPO, "requirements.txt"))]
    assert {name: pins.get(canonicalize_name(name)) for name in required} == {
        name: metadata.version(name) for name in required}
