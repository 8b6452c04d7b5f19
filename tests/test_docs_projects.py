"""The command blocks of the studies' READMEs (projects/<name>/README.md) and of datasets/README.md.

The studies' commands are experiments of hours (kd_report.py over every recipe and seed,
benchmark_deploy.py, the unlabeled-pages queue), so they do not run here: each runs as written in
a ``recording_workspace`` whose ``.venv/bin/python`` records its calls (the shell expands globs and
variables, a script such as ``queue.sh`` makes its own calls), and every call is checked with the
tool's own argument parser and validation: config files exist and load with the ``KEY VALUE``
overrides given (a renamed key fails), globs match files, and every weights file or folder a call
reads is in the repository or written by an earlier documented step (each checked call leaves
empty stand-ins of what it would write: the KD benchmark's checkpoints, the unlabeled pages...).
Cheap commands also run for real with size-only overrides: the published KD report rebuilt
(``projects/kd_benchmark/tests/test_published_report.py``), the large-page benchmark on a small
page, the synthetic generator with two pages, the PRImA conversion of five pages.
"""
import contextlib
import glob
import json
import os
import re
from dataclasses import replace

import pytest
from detectron2.data import DatasetCatalog

import dla_kd  # noqa: F401  (registers the datasets)
from dla_kd.config import load_config
from dla_kd.data.image_check import MODES as IMAGE_CHECK_MODES
from doc_commands import doc_blocks, make_workspace
from docs_fixtures import recorded_calls, recording_workspace, run_block
from test_docs_reference import check_train_net_args
from test_prima import page_2010, write_prima
from tiny_models import REPO, load_tool

# Written by the steps of docs/getting_started.md the studies' commands start from (downloaded there).
IMAGENET = sorted(set(re.findall(r"imagenet/R-\d+\.pkl", open(os.path.join(REPO, "docs", "getting_started.md")).read())))


@contextlib.contextmanager
def inside(folder):
    """The tools resolve their relative paths against the working directory."""
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


KINDS = {"file": os.path.isfile, "folder": os.path.isdir, "file or folder": os.path.exists}


def exists(ws, path, where, what="file"):
    assert KINDS[what](os.path.join(ws, path)), (
        f"{where}: {what} {path} is neither in the repository nor written by an earlier documented step")


# --- one checker per tool: (argv, ws, where) -> what the call writes (files, folders ending in /) ---
def check_train_net(argv, ws, where):
    args = check_train_net_args(argv, ws, where)
    cfg = load_config(os.path.join(ws, args.config_file), args.opts, freeze=False)
    return [] if args.eval_only else [os.path.join(cfg.OUTPUT_DIR, "model_final.pth")]


def check_train_mydocs(argv, ws, where):
    """The launcher docs/unlabeled.md asks the reader to save: train_net with registrations."""
    assert "train_mydocs.py" in doc_blocks(os.path.join(REPO, "docs", "unlabeled.md"), named_only=True), where
    return check_train_net(argv, ws, where)


def check_kd_report(argv, ws, where):
    tool = load_tool("kd_report", os.path.join("projects", "kd_benchmark", "tools"))
    args = tool.build_parser().parse_args(argv)
    for config in [args.teacher, args.student, *args.distill]:
        exists(ws, config, where)  # a glob that matched nothing is left as written by the shell
    with inside(ws):
        bench = tool.KDBenchmark(args)  # loads the student's and teacher's configs with their overrides
        for name, (config, opts) in bench.runs.items():
            load_config(config, opts)  # every recipe with the overrides and teacher it trains with
        for folder in filter(None, (args.publish, args.publish_runs)):
            exists(ws, folder, where, "folder")
    if args.teacher_weights:
        exists(ws, args.teacher_weights, where)
    for name, folder in bench.reuse.items():
        for seed in args.seeds:
            exists(ws, os.path.join(folder, f"seed{seed}", "model_final.pth"), f"{where} (--reuse {name})")
    if args.collect_only:
        return []
    trained = [os.path.join(bench.out_dir(name, seed), "model_final.pth") for name, seed in bench.plan]
    return trained + ([] if args.teacher_weights else [bench.teacher_weights])


def check_benchmark_deploy(argv, ws, where):
    tool = load_tool("benchmark_deploy", os.path.join("projects", "deploy_benchmark", "tools"))
    args = tool.build_parser().parse_args(argv)
    with inside(ws):
        models = [tool.DeployModel.parse(m) for m in args.model]  # config and weights exist
        budgets = [tool.NamedBudget.parse(b) for b in args.budget or []]
        for model in models:
            cfg = load_config(model.config_file, freeze=False)
            for budget in budgets:
                budget.budget.apply(cfg)
    assert args.teacher in {m.name for m in models}, where
    for dataset in filter(None, (args.dataset, args.calibration)):
        assert dataset in DatasetCatalog.list() or os.path.isdir(os.path.join(ws, dataset)), f"{where}: {dataset}"
    return []


def check_benchmark_predict(argv, ws, where):
    args = load_tool("benchmark_predict").build_parser().parse_args(argv)
    load_config(args.config_file, args.opts)
    return []


def check_make_synthetic(argv, ws, where):
    args = load_tool("make_synthetic_dataset").parse_args(argv)
    return [os.path.join(args.out, f"{args.split}.json"), os.path.join(args.out, args.split) + os.sep]


def check_pseudo_label(argv, ws, where):
    tool = load_tool("pseudo_label")
    parser = tool.build_parser()
    args = parser.parse_args(argv)
    tool.check_arguments(parser, args)
    exists(ws, args.config_file, where)
    cfg = load_config(os.path.join(ws, args.config_file), args.opts)
    exists(ws, cfg.MODEL.WEIGHTS, where)
    for path in args.input:
        exists(ws, path, where, "file or folder")
    return [os.path.join(args.output, "pseudo_labels.json")]


CHECKS = {
    "tools/train_net.py": check_train_net,
    "train_mydocs.py": check_train_mydocs,
    "projects/kd_benchmark/tools/kd_report.py": check_kd_report,
    "projects/deploy_benchmark/tools/benchmark_deploy.py": check_benchmark_deploy,
    "tools/benchmark_predict.py": check_benchmark_predict,
    "tools/make_synthetic_dataset.py": check_make_synthetic,
    "tools/pseudo_label.py": check_pseudo_label,
}


def leave_stand_ins(ws, written, where):
    """Empty files (folders for paths ending in /) where a checked call would write, so that the
    next steps find them; only under output/ and datasets/ (the repository's own files stay)."""
    for path in written:
        assert path.split(os.sep)[0] in ("output", "datasets"), f"{where}: writes {path} outside output/ and datasets/"
        full = os.path.join(ws, path)
        os.makedirs(full if path.endswith(os.sep) else os.path.dirname(full), exist_ok=True)
        if not path.endswith(os.sep):
            open(full, "a").close()


def check_block(block, ws):
    """Every call of ``.venv/bin/python`` the block makes, checked by its tool's checker."""
    calls = 0
    for command in block.commands:
        for call in recorded_calls(command, ws):
            script, *argv = call["argv"]
            where = f"{command.where()}: {script}"
            assert script in CHECKS, f"{where}: no check for this tool (add one to CHECKS)"
            mode = call["env"].get("DLA_KD_IMAGE_CHECK")
            assert mode is None or mode in IMAGE_CHECK_MODES, f"{where}: DLA_KD_IMAGE_CHECK={mode}"
            leave_stand_ins(ws, CHECKS[script](argv, ws, where), where)
            calls += 1
    assert calls, f"{block.path} block {block.name!r} runs no .venv/bin/python"


# --- commands that are cheap: run as written with size-only overrides -----------------------------
def real_workspace(ws):
    return make_workspace(os.path.join(ws, "run"), REPO, links=("tools", "configs"))


def check_and_run_predict_scale(block, ws):
    check_block(block, ws)
    run = real_workspace(ws)
    run_block(block, ["--page-size", "256x192", "--detections", "5"], run,
              ["projects/deploy_benchmark/results/predict_scale/benchmark_predict.json"])


def check_and_run_make_synthetic(block, ws):
    check_block(block, ws)
    run = real_workspace(ws)
    run_block(block, ["--num-images", "2", "--width", "160", "--height", "200"], run,
              ["datasets/synthetic/doclaynet/train.json"])
    with open(os.path.join(run, "datasets", "synthetic", "doclaynet", "train.json")) as f:
        assert len(json.load(f)["images"]) == 2
    assert len(glob.glob(os.path.join(run, "datasets", "synthetic", "doclaynet", "train", "*.png"))) == 2


def run_convert_prima(block, ws):
    """Five PRImA pages laid out as the page's tree shows, converted as written."""
    run = real_workspace(ws)
    pages = {f"pc-{i:04d}.xml": (page_2010(image=f"{i:04d}.tif"), f"{i:04d}.tif", (200, 300)) for i in range(5)}
    write_prima(os.path.join(run, "datasets", "PRImA"), pages)
    run_block(block, [], run, ["datasets/PRImA/annotations-train.json", "datasets/PRImA/annotations-val.json"])


# page -> block name -> function (block, workspace) that checks or runs it, in the pages' order.
# Not yet checked: projects/kd_benchmark/pretrained/README.md and projects/real_pages/README.md (the
# coordinator is editing them; tests/test_docs.py leaves them out of its every-block check for now).
OVERRIDES = {
    "projects/kd_benchmark/README.md": {
        "kd-report": check_block,  # its --collect-only run: projects/kd_benchmark/tests/test_published_report.py
    },
    "projects/unlabeled_kd/README.md": {
        "queue": check_block,
    },
    "projects/deploy_benchmark/README.md": {
        "benchmark-deploy": check_block,
        "predict-scale": check_and_run_predict_scale,
    },
    "datasets/README.md": {
        "image-check-decode": check_block,
        "convert-prima": run_convert_prima,
        "train-mydocs": check_block,
        "make-synthetic": check_and_run_make_synthetic,
    },
}


def check_page(doc, ws):
    blocks = doc_blocks(os.path.join(REPO, doc), named_only=True)
    for name, how in OVERRIDES[doc].items():
        how(blocks[name], ws)


@pytest.fixture(scope="module")
def kd_benchmark_outputs(tmp_path_factory):
    """A recording workspace holding what the KD benchmark's report command writes (stand-ins),
    which the other studies start from, and the ImageNet files of docs/getting_started.md."""
    ws = recording_workspace(str(tmp_path_factory.mktemp("studies") / "clone"))
    os.makedirs(os.path.join(ws, "imagenet"))
    for path in IMAGENET:
        open(os.path.join(ws, path), "w").close()
    check_page("projects/kd_benchmark/README.md", ws)
    return ws


# --- the tests ------------------------------------------------------------------------------------
def test_kd_benchmark_commands(kd_benchmark_outputs):
    ws = kd_benchmark_outputs
    for run in ("teacher", "student/seed42", "crosskd/seed42", "defeat_crosskd/seed2"):
        assert os.path.isfile(os.path.join(ws, "output", "kd_benchmark", run, "model_final.pth")), run


def test_unlabeled_kd_commands(kd_benchmark_outputs):
    ws = kd_benchmark_outputs
    check_page("projects/unlabeled_kd/README.md", ws)
    assert os.path.isfile(os.path.join(ws, "output", "unlabeled", "kd_unlabeled_pseudo", "seed2", "model_final.pth"))


def test_deploy_benchmark_commands(kd_benchmark_outputs):
    check_page("projects/deploy_benchmark/README.md", kd_benchmark_outputs)


def test_datasets_commands(kd_benchmark_outputs):
    check_page("datasets/README.md", kd_benchmark_outputs)
    assert os.path.isfile(os.path.join(kd_benchmark_outputs, "output", "mydocs", "model_final.pth"))


def test_checks_catch_renames_and_missing_steps(kd_benchmark_outputs, tmp_path):
    """A renamed config key, a glob matching nothing, weights no step writes, an unknown tool."""
    ws = kd_benchmark_outputs
    base = doc_blocks(os.path.join(REPO, "projects", "deploy_benchmark", "README.md"), named_only=True)
    deploy = base["benchmark-deploy"]
    for old, new, error in (("seed42/model_final.pth", "seed7/model_final.pth", "does not exist"),
                            ("POST_NMS_TOPK_TEST=100", "POST_NMS_TOPK=100", "KEY=VALUE")):
        changed = replace(deploy, commands=[replace(c, text=c.text.replace(old, new)) for c in deploy.commands])
        with pytest.raises((AssertionError, FileNotFoundError, ValueError), match=error):
            check_block(changed, ws)
    report = doc_blocks(os.path.join(REPO, "projects", "kd_benchmark", "README.md"), named_only=True)["kd-report"]
    for old, new, error in (("[a-z]*.yaml", "[A-Z]*.yaml", "neither in the repository"),
                            ("--threads 2", "--threads 2 SOLVER.MAX_ITERS 10", "Non-existent")):
        changed = replace(report, commands=[replace(c, text=c.text.replace(old, new)) for c in report.commands])
        with pytest.raises((AssertionError, KeyError), match=error):
            check_block(changed, ws)
    mydocs = doc_blocks(os.path.join(REPO, "datasets", "README.md"), named_only=True)["train-mydocs"]
    second = mydocs.commands[1]
    changed = replace(mydocs, commands=[replace(second, text=second.text.replace("output/mydocs/", "output/other/"))])
    with pytest.raises(AssertionError, match="files do not exist"):
        check_block(changed, ws)
    changed = replace(mydocs, commands=[replace(second, text=second.text.replace("train_mydocs.py", "tools/x.py"))])
    with pytest.raises(AssertionError, match="no check for this tool"):
        check_block(changed, ws)
