"""The command blocks of the studies' READMEs (projects/<name>/README.md) and of datasets/README.md.

The studies' commands are experiments of hours (kd_report.py over every recipe and seed,
benchmark_deploy.py, the studies' queues), so they do not run here: each runs as written in a
``recording_workspace`` whose ``.venv/bin/python`` records its calls (the shell expands globs and
variables, a script such as ``queue.sh`` or ``run_benchmark.sh`` makes its own calls; its
``python -c`` one-liners run), and every call is checked with the tool's own argument parser and
validation: config files exist and load with the ``KEY VALUE`` overrides given (a renamed key
fails), globs match files, a study's datasets are registered, and every weights file or folder a
call reads is in the repository or written by an earlier documented step (each checked call
leaves empty stand-ins of what it would write: the KD benchmarks' checkpoints and published runs,
the unlabeled pages...; ``projects/`` is mirrored in the workspace, so a study's published results
are written there, never into the repository). Programs of the machine are stand-ins too
(``docs_fixtures.STAND_IN_PROGRAMS``): ``git clone`` (checked: PubLayNet's repository, the folder
a later step reads) and ``apt-get`` (checked: it installs the packages of the real-pages page list)
are recorded, the package manager answers "not installed"; nothing is cloned or installed.
Cheap commands also run for real with size-only overrides: the published KD report rebuilt
(``projects/kd_benchmark/tests/test_published_report.py``), the large-page benchmark on a small
page, the synthetic generator with two pages, the PRImA conversion of five pages.
"""
import argparse
import contextlib
import glob
import json
import os
import re
from dataclasses import replace
from unittest import mock

import pytest
from detectron2.data import DatasetCatalog

import dla_kd  # noqa: F401  (registers the datasets)
from dla_kd.config import load_config
from dla_kd.data.image_check import MODES as IMAGE_CHECK_MODES
from dla_kd.export.exporter import MODEL_FILES
from dla_kd.predict.external import EXTERNAL_TEACHER_REGISTRY, ClassMap
from dla_kd.predict.external.registry import BUILTIN_PLUGINS
from doc_commands import Block, doc_blocks, make_workspace, split_commands
from docs_fixtures import recorded_calls, recording_workspace, run_block
from test_docs_reference import check_train_net_args
from test_prima import page_2010, write_prima
from tiny_models import REPO, load_tool

# Written by the steps of docs/getting_started.md the studies' commands start from (downloaded there).
IMAGENET = sorted(set(re.findall(r"imagenet/R-\d+\.pkl", open(os.path.join(REPO, "docs", "getting_started.md")).read())))
PRETRAINED = os.path.join("projects", "kd_benchmark", "pretrained")
REAL_PAGES = os.path.join("projects", "real_pages")


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


def repo_relative(path):
    """A tool's default path (made from where the tool's file is in the repository) as the clone's."""
    return os.path.relpath(path, REPO) if os.path.isabs(path) else path


class _Parsed(Exception):
    """Stops a tool's ``main`` once its parser has parsed the arguments (``main_args``)."""


def main_args(tool, argv, ws, where):
    """The arguments that ``tool.main`` parses from ``argv`` with its own parser (tools that
    build it inside ``main``), in ``ws`` with the datasets root of the recorded call; nothing after
    the parsing runs. A usage error fails naming the call."""
    parse, parsed = argparse.ArgumentParser.parse_args, []

    def parse_and_stop(parser, args=None, namespace=None):
        parsed.append(parse(parser, args, namespace))
        raise _Parsed

    with inside(ws), mock.patch.dict(os.environ, {"DETECTRON2_DATASETS": "datasets"}), \
            mock.patch.object(argparse.ArgumentParser, "parse_args", parse_and_stop):
        try:
            tool.main(argv)
        except _Parsed:
            pass
        except SystemExit as e:
            raise AssertionError(f"{where}: usage error (exit {e.code}), see the tool's message above") from None
    assert parsed, f"{where}: the tool's main parsed no arguments"
    return parsed[0]


def check_config_and_weights(ws, config_file, opts, where):
    """A config that loads with ``opts`` and its MODEL.WEIGHTS, both in the clone."""
    exists(ws, config_file, where)
    exists(ws, load_config(os.path.join(ws, config_file), opts).MODEL.WEIGHTS, where)


def check_external_teacher(plugin, class_map, where):
    """An external teacher the toolkit knows (shipped or registered) and a class map that loads."""
    assert plugin in BUILTIN_PLUGINS or plugin in EXTERNAL_TEACHER_REGISTRY, f"{where}: no external teacher {plugin!r}"
    assert class_map, f"{where}: --teacher {plugin} needs --class-map"
    ClassMap.from_file(class_map)


# --- datasets a study's launcher registers: (register) -> {dataset: file it reads, relative to the clone}
def pretrain_corpus():
    load_tool("pretrain_data", PRETRAINED).register_pretrain_corpus()
    return {}  # synthetic splits: generated on first use


def real_pages_datasets():
    study = load_tool("datasets", os.path.join(REAL_PAGES, "real_pages"))
    study.register_real_pages()
    return {study.TRAIN_SET: os.path.join("datasets", study.PSEUDO),
            study.TEST_SET: os.path.join("datasets", study.EXAMPLES, "annotations.json")}


# --- one checker per tool: (argv, ws, where) -> what the call writes (files, folders ending in /) ---
def check_train_net(argv, ws, where, datasets=None):
    """``datasets``: the study's registration (see above): every dataset of the config is then
    registered and the files it reads are in the clone."""
    args = check_train_net_args(argv, ws, where)
    cfg = load_config(os.path.join(ws, args.config_file), args.opts, freeze=False)
    if datasets is not None:
        files = datasets()
        for name in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST):
            assert name in DatasetCatalog.list(), f"{where}: dataset {name} is not registered"
            if name in files:
                exists(ws, files[name], f"{where} (dataset {name})")
    return [] if args.eval_only else [os.path.join(cfg.OUTPUT_DIR, "model_final.pth")]


def study_launcher(datasets):
    """The checker of a study's tools/train_net.py with its datasets registered (``datasets``)."""
    return lambda argv, ws, where: check_train_net(argv, ws, where, datasets)


def check_train_mydocs(argv, ws, where):
    """The launcher docs/unlabeled.md asks the reader to save: train_net with registrations."""
    assert "train_mydocs.py" in doc_blocks(os.path.join(REPO, "docs", "unlabeled.md"), named_only=True), where
    return check_train_net(argv, ws, where)


def check_kd_report(argv, ws, where):
    """Writes every planned run's checkpoint (and the teacher's unless given) and, with
    --publish/--publish-runs, every run's evaluations on its test datasets in the published folder
    (what a later step reads)."""
    tool = load_tool("kd_report", os.path.join("projects", "kd_benchmark", "tools"))
    args = tool.build_parser().parse_args(argv)
    for config in [args.teacher, args.student, *args.distill]:
        exists(ws, config, where)  # a glob that matched nothing is left as written by the shell
    with inside(ws):
        bench = tool.KDBenchmark(args)  # loads the student's and teacher's configs with their overrides
        # every recipe with the overrides and teacher it trains with: its test datasets
        tests = {name: load_config(config, opts).DATASETS.TEST for name, (config, opts) in bench.runs.items()}
        tests["teacher"] = load_config(args.teacher, args.teacher_opts).DATASETS.TEST
    publish = args.publish or args.publish_runs
    if publish:
        exists(ws, os.path.dirname(os.path.normpath(publish)), f"{where} (--publish {publish})", "folder")
    if args.teacher_weights:
        exists(ws, args.teacher_weights, where)
    for name, folder in bench.reuse.items():
        for seed in args.seeds:
            exists(ws, os.path.join(folder, f"seed{seed}", "model_final.pth"), f"{where} (--reuse {name})")
    published = [os.path.join(bench.published(name, seed), f"eval_{dataset}.json")
                 for name, seed in [*bench.plan, ("teacher", None)] for dataset in tests[name]] if publish else []
    if args.collect_only:
        return published
    trained = [os.path.join(bench.out_dir(name, seed), "model_final.pth") for name, seed in bench.plan]
    return trained + ([] if args.teacher_weights else [bench.teacher_weights]) + published


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
    if args.teacher:
        check_external_teacher(args.teacher, args.class_map, where)
    else:
        check_config_and_weights(ws, args.config_file, args.opts, where)
    for path in args.input:
        exists(ws, path, where, "file or folder")
    return [os.path.join(args.output, "pseudo_labels.json")]


def check_export_model(argv, ws, where):
    tool = load_tool("export_model")
    parser = tool.build_parser()
    args = parser.parse_args(argv)
    tool.int8_options(parser, args)
    check_config_and_weights(ws, args.config_file, args.opts, where)
    files = [MODEL_FILES[args.format], "student_config.yaml", "export_info.json"]
    return [os.path.join(args.output, f) for f in files + (["model.int8.onnx"] if args.quantize else [])]


# The KD benchmark's pretrained regime (projects/kd_benchmark/pretrained/).
def check_export_weights(argv, ws, where):
    args = main_args(load_tool("export_weights", PRETRAINED), argv, ws, where)
    exists(ws, args.checkpoint, where)
    return [args.out, args.out + ".json"]


def check_select_recipe(argv, ws, where):
    """Reads the published validation evaluations of the candidates (``terms``), then of the
    finalists (``recommended``, after ``terms`` wrote the selection); writes the selection (and
    the combination's config)."""
    tool = load_tool("select_recipe", PRETRAINED)
    args = main_args(tool, argv, ws, where)
    out = repo_relative(args.out)
    recipes = tool.FEATURE + tool.RESPONSE
    if args.step == "recommended":
        exists(ws, out, f"{where} (the 'terms' step's selection)")
        recipes = recipes + [tool.COMBINATION]
    for recipe in recipes:
        exists(ws, os.path.join(args.runs, recipe, f"seed{tool.SEED}", f"eval_{tool.DATASET}.json"), where)
    combination = args.combination or os.path.join(repo_relative(args.recipes), f"{tool.COMBINATION}.yaml")
    return [out] + ([combination] if args.step == "terms" else [])


def check_analyze(argv, ws, where):
    tool = load_tool("analyze", PRETRAINED)
    args = main_args(tool, argv, ws, where)
    rows = dict(tool.parse_rows(args.row))
    try:
        tool.check_names(list(rows), args.reference_1x, args.reference_3x, args.family,
                         dict(tool.parse_rows(args.reference)))
    except ValueError as e:
        raise AssertionError(f"{where}: --reference*/--family name no --row: {e}") from None
    exists(ws, os.path.join(args.teacher, f"eval_{args.dataset}.json"), where)
    for name, folder in rows.items():
        found = glob.glob(os.path.join(ws, folder, "seed*", f"eval_{args.dataset}.json"))
        assert found, f"{where}: row {name!r}: no {folder}/seed*/eval_{args.dataset}.json written by an earlier step"
    return [args.out + ".json", args.out + ".md"]


# The real-pages study (projects/real_pages/).
PUBLAYNET_MANIFEST = os.path.join(REAL_PAGES, "data", "publaynet_examples.json")
PAGE_LIST = os.path.join(REAL_PAGES, "data", "texlive_pages.tsv")
CLONES = ".doc_clones.json"  # in a workspace: the folders documented `git clone`s wrote (outside it)


def documented_clones(ws):
    """{folder: repository URL} of the documented ``git clone`` calls checked in ``ws``."""
    path = os.path.join(ws, CLONES)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def check_git(argv, ws, where):
    """Only ``git clone URL DIR`` of a repository a documented step reads (PubLayNet's): recorded
    in the workspace, as DIR is outside it."""
    assert argv[:1] == ["clone"] and len(argv) == 3, f"{where}: only `git clone URL DIR` is checked: {argv}"
    url, folder = argv[1:]
    with open(os.path.join(REPO, PUBLAYNET_MANIFEST)) as f:
        assert url == json.load(f)["repo"], f"{where}: {url} is not the repository of {PUBLAYNET_MANIFEST}"
    clones = {**documented_clones(ws), folder: url}
    with open(os.path.join(ws, CLONES), "w") as f:
        json.dump(clones, f)
    return []


def check_apt_get(argv, ws, where):
    """apt-get update, or the install of the packages whose pages the study's page list pins."""
    command, *rest = [a for a in argv if not a.startswith("-")]
    assert command in ("update", "install"), f"{where}: apt-get {command}"
    if command == "install":
        collect = load_tool("collect_pages", os.path.join(REAL_PAGES, "tools"))
        pinned = {row["package"] for row in collect.read_page_list(os.path.join(REPO, PAGE_LIST))}
        assert pinned <= set(rest), f"{where}: installs {rest}, the page list needs {sorted(pinned)}"
    return []


def check_collect_pages(argv, ws, where):
    tool = load_tool("collect_pages", os.path.join(REAL_PAGES, "tools"))
    args = main_args(tool, argv, ws, where)
    if args.page_list:
        exists(ws, args.page_list, where)
        rows = tool.read_page_list(os.path.join(ws, args.page_list))  # its columns checked
        packages = {row["package"] for row in rows}
        assert packages <= set(args.packages), f"{where}: the page list's packages {sorted(packages)} are not all read"
    return [os.path.join(args.output, "pages") + os.sep, os.path.join(args.output, "pages.jsonl")]


def check_get_publaynet_examples(argv, ws, where):
    args = main_args(load_tool("get_publaynet_examples", os.path.join(REAL_PAGES, "tools")), argv, ws, where)
    assert args.repo in documented_clones(ws), (
        f"{where}: --repo {args.repo} is not a clone made by an earlier documented step")
    return [os.path.join(args.output, "annotations.json"), os.path.join(args.output, "images") + os.sep]


def check_real_pages_evaluate(argv, ws, where):
    """One model on the study's test set (written by get_publaynet_examples.py): an external
    teacher, a config with its weights, or an exported model."""
    tool = load_tool("evaluate", os.path.join(REAL_PAGES, "tools"))
    args = main_args(tool, argv, ws, where)
    exists(ws, os.path.join("datasets", tool.EXAMPLES, "annotations.json"), f"{where} (the test set)")
    if args.teacher:
        check_external_teacher(args.teacher, args.class_map, where)
    elif args.config_file:
        check_config_and_weights(ws, args.config_file, args.opts, where)
    else:
        exists(ws, args.exported, where, "folder")
    results = repo_relative(args.results)
    return [os.path.join(results, f"{args.name}.json"), os.path.join(results, f"{args.name}.md"),
            os.path.join(results, "detections", f"{args.name}.json")]


def check_real_pages_report(argv, ws, where):
    """Takes no arguments; reads every model's evaluation (tools/evaluate.py) in the results."""
    tool = load_tool("report", os.path.join(REAL_PAGES, "tools"))
    assert argv == [], f"{where}: report.py takes no arguments: {argv}"
    results = repo_relative(tool.RESULTS)
    missing = [name for name in tool.ORDER if not glob.glob(os.path.join(ws, results, f"{name}*.json"))]
    assert not missing, f"{where}: no evaluation of {missing} in {results}"
    return [os.path.join(results, "report.md"), os.path.join(results, "report.png")]


CHECKS = {
    "tools/train_net.py": check_train_net,
    "train_mydocs.py": check_train_mydocs,
    "projects/kd_benchmark/tools/kd_report.py": check_kd_report,
    "projects/deploy_benchmark/tools/benchmark_deploy.py": check_benchmark_deploy,
    "tools/benchmark_predict.py": check_benchmark_predict,
    "tools/make_synthetic_dataset.py": check_make_synthetic,
    "tools/pseudo_label.py": check_pseudo_label,
    "tools/export_model.py": check_export_model,
    f"{PRETRAINED}/train_net.py": study_launcher(pretrain_corpus),
    f"{PRETRAINED}/export_weights.py": check_export_weights,
    f"{PRETRAINED}/select_recipe.py": check_select_recipe,
    f"{PRETRAINED}/analyze.py": check_analyze,
    f"{REAL_PAGES}/tools/train_net.py": study_launcher(real_pages_datasets),
    f"{REAL_PAGES}/tools/collect_pages.py": check_collect_pages,
    f"{REAL_PAGES}/tools/get_publaynet_examples.py": check_get_publaynet_examples,
    f"{REAL_PAGES}/tools/evaluate.py": check_real_pages_evaluate,
    f"{REAL_PAGES}/tools/report.py": check_real_pages_report,
    # Programs of the machine (docs_fixtures.STAND_IN_PROGRAMS): recorded, never run.
    "git": check_git,
    "apt-get": check_apt_get,
}


def leave_stand_ins(ws, written, where):
    """Empty files (folders for paths ending in /) where a checked call would write, so that the
    next steps find them. A file the repository has is left as it is (the call makes it again); a
    new one is made only in the workspace, never through its links into the repository."""
    root = os.path.realpath(ws)
    for path in written:
        full = os.path.join(ws, path)
        if os.path.isfile(full) or (path.endswith(os.sep) and os.path.isdir(full)):
            continue
        parent = full
        while not os.path.isdir(parent):
            parent = os.path.dirname(parent)
        inside_ws = os.path.commonpath([os.path.realpath(parent), root]) == root
        assert inside_ws, f"{where}: writes {path}, which is outside the clone or a folder of the repository"
        os.makedirs(full if path.endswith(os.sep) else os.path.dirname(full), exist_ok=True)
        if not path.endswith(os.sep):
            open(full, "a").close()


CHECKED = []  # (workspace, script, argv) of every call check_block has checked, in order


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
            CHECKED.append((ws, script, argv))
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


# page -> block name -> function (block, workspace) that checks or runs it, in the pages' order
# (a page's stand-ins feed the later pages: the pretrained regime's selection runs are the
# deploy benchmark's pretrained rows).
OVERRIDES = {
    "projects/kd_benchmark/README.md": {
        "kd-report": check_block,  # its --collect-only run: projects/kd_benchmark/tests/test_published_report.py
    },
    "projects/kd_benchmark/pretrained/README.md": {
        "pretrained-benchmark": check_block,
    },
    "projects/unlabeled_kd/README.md": {
        "queue": check_block,
    },
    "projects/real_pages/README.md": {
        # git and the package manager are stand-ins (docs_fixtures.STAND_IN_PROGRAMS): the clone of
        # PubLayNet and the apt-get install of install_texlive_docs.sh are recorded and checked, not run.
        "real-pages-queue": check_block,
    },
    "projects/deploy_benchmark/README.md": {
        "benchmark-deploy": check_block,
        "benchmark-deploy-pretrained": check_block,
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


@pytest.fixture(scope="module")
def pretrained_outputs(kd_benchmark_outputs):
    """``kd_benchmark_outputs`` and what the pretrained regime's commands write (stand-ins): its
    selection runs are the deploy benchmark's pretrained rows."""
    check_page("projects/kd_benchmark/pretrained/README.md", kd_benchmark_outputs)
    return kd_benchmark_outputs


def changed(block, old, new):
    """``block`` with ``old`` replaced by ``new`` in its commands."""
    assert any(old in c.text for c in block.commands), f"{old!r} is not in block {block.name!r}"
    return replace(block, commands=[replace(c, text=c.text.replace(old, new)) for c in block.commands])


def command_block(text):
    """A block of the shell commands ``text`` (a changed documented command)."""
    return Block("changed", "<test>", 1, text, split_commands(text, "<test>", block="changed"))


def edit_script(ws, path, old, new):
    """The workspace's copy of the study script ``path`` with ``old`` replaced by ``new`` (the
    repository's file stays as it is)."""
    full = os.path.join(ws, path)
    with open(full) as f:
        text = f.read()
    assert old in text, f"{old!r} is not in {path}"
    os.remove(full)  # a link to the repository's file
    with open(full, "w") as f:
        f.write(text.replace(old, new))


# --- the tests ------------------------------------------------------------------------------------
def test_kd_benchmark_commands(kd_benchmark_outputs):
    ws = kd_benchmark_outputs
    for run in ("teacher", "student/seed42", "crosskd/seed42", "defeat_crosskd/seed2"):
        assert os.path.isfile(os.path.join(ws, "output", "kd_benchmark", run, "model_final.pth")), run


def test_kd_benchmark_pretrained_commands(pretrained_outputs):
    ws = pretrained_outputs
    out = os.path.join(ws, "output", "kd_benchmark_pretrained")
    for run in ("pretrain_R_18_BN", "teacher", "selection/student/seed42", "selection/combination/seed42",
                "1x/crosskd/seed4", "3x/student/seed4", "3x/combination/seed2", "scratch/combination/seed2"):
        assert os.path.isfile(os.path.join(out, run, "model_final.pth")), run
    # the table is analyze.py's, written to the committed results/report.{json,md}
    analyzed = [argv for w, script, argv in CHECKED if w == ws and script == f"{PRETRAINED}/analyze.py"]
    assert analyzed, "the documented commands never run analyze.py"
    assert analyzed[-1][analyzed[-1].index("--out") + 1] == f"{PRETRAINED}/results/report"


def test_real_pages_commands(kd_benchmark_outputs):
    ws = kd_benchmark_outputs
    check_page("projects/real_pages/README.md", ws)
    for path in ("datasets/real_pages/cdla_pseudo/pseudo_labels.json", "output/real_pages/teacher/model_final.pth",
                 "output/real_pages/kd_recommended/seed2/model_final.pth", "export/real_pages/student/model.onnx"):
        assert os.path.isfile(os.path.join(ws, path)), path
    assert documented_clones(ws) == {"/tmp/PubLayNet": "https://github.com/ibm-aur-nlp/PubLayNet"}


def test_unlabeled_kd_commands(kd_benchmark_outputs):
    ws = kd_benchmark_outputs
    check_page("projects/unlabeled_kd/README.md", ws)
    assert os.path.isfile(os.path.join(ws, "output", "unlabeled", "kd_unlabeled_pseudo", "seed2", "model_final.pth"))


def test_deploy_benchmark_commands(pretrained_outputs):
    check_page("projects/deploy_benchmark/README.md", pretrained_outputs)


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
        with pytest.raises((AssertionError, FileNotFoundError, ValueError), match=error):
            check_block(changed(deploy, old, new), ws)
    report = doc_blocks(os.path.join(REPO, "projects", "kd_benchmark", "README.md"), named_only=True)["kd-report"]
    for old, new, error in (("[a-z]*.yaml", "[A-Z]*.yaml", "neither in the repository"),
                            ("--threads 2", "--threads 2 SOLVER.MAX_ITERS 10", "Non-existent")):
        with pytest.raises((AssertionError, KeyError), match=error):
            check_block(changed(report, old, new), ws)
    mydocs = doc_blocks(os.path.join(REPO, "datasets", "README.md"), named_only=True)["train-mydocs"]
    second = replace(mydocs, commands=mydocs.commands[1:])
    with pytest.raises(AssertionError, match="files do not exist"):
        check_block(changed(second, "output/mydocs/", "output/other/"), ws)
    with pytest.raises(AssertionError, match="no check for this tool"):
        check_block(changed(second, "train_mydocs.py", "tools/x.py"), ws)


def test_checks_catch_breaks_of_the_studies_scripts(pretrained_outputs, tmp_path):
    """A config renamed in a study script, a published run no step writes, a stage that does not
    exist, another repository cloned, a package of the page list not installed, a training before
    the teacher it distils from, weights of a seed that never trained."""
    deploy = doc_blocks(os.path.join(REPO, "projects", "deploy_benchmark", "README.md"), named_only=True)
    with pytest.raises((AssertionError, FileNotFoundError), match="does not exist"):
        check_block(changed(deploy["benchmark-deploy-pretrained"], "student/seed42", "student/seed7"), pretrained_outputs)
    queue = doc_blocks(os.path.join(REPO, REAL_PAGES, "README.md"), named_only=True)["real-pages-queue"]
    clone, _, speed = queue.commands
    with pytest.raises(AssertionError, match="exited with 2"):
        check_block(changed(replace(queue, commands=[speed]), "queue.sh speed", "queue.sh speeds"), pretrained_outputs)
    ws = recording_workspace(str(tmp_path / "clone"))
    with pytest.raises(AssertionError, match="is not the repository of"):
        check_block(changed(replace(queue, commands=[clone]), "ibm-aur-nlp/PubLayNet", "ibm-aur-nlp/PubTabNet"), ws)
    with pytest.raises(AssertionError, match="files do not exist"):  # the KD student before its teacher
        check_block(command_block(f"MODELS=kd_recommended bash {REAL_PAGES}/scripts/queue.sh train"), ws)
    edit_script(ws, f"{REAL_PAGES}/scripts/install_texlive_docs.sh", "texlive-science-doc ", "")
    with pytest.raises(AssertionError, match="the page list needs"):
        check_block(command_block(f"PUBLAYNET_REPO=/tmp/PubLayNet bash {REAL_PAGES}/scripts/queue.sh data"), ws)
    benchmark = f"{PRETRAINED}/run_benchmark.sh"
    edit_script(ws, benchmark, '--row "supervised 3x=$R/3x/', '--row "supervised 3x=$R/2x/')
    check_block(command_block(f"bash {benchmark} table"), ws)
    with pytest.raises(AssertionError, match="no .*2x/runs/student/seed.* written by an earlier step"):
        check_block(command_block(f"bash {benchmark} analyze"), ws)
    edit_script(ws, benchmark, 'student_MNv3_small_pretrained.yaml" --distill "${candidates[@]}" --seeds 42',
                'student_MNv3_small.yaml" --distill "${candidates[@]}" --seeds 42')
    with pytest.raises(AssertionError, match="neither in the repository"):
        check_block(command_block(f"bash {benchmark} selection"), ws)
