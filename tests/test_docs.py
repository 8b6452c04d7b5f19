"""The documentation's commands run: every shell block of README.md, docs/getting_started.md and
docs/unlabeled.md, exactly as written (tests/doc_commands.py), with small overrides appended
(tests/docs_fixtures.py); docs/external_teachers.md's blocks run in
tests/test_docs_external_teachers.py, those of the other pages of docs/ in
tests/test_docs_reference.py, those of the studies' READMEs (projects/<name>/README.md) and of
datasets/README.md in tests/test_docs_projects.py.

They run in a workspace laid out as a user's clone (``docs_fixtures.clone_workspace``):
``configs``/``tools`` of this repository, a ``datasets/`` folder shaped like the real one
(``DocLayNet/COCO/{train,val,test}.json`` + ``DocLayNet/PNG/`` with synthetic pages, the quick
start's synthetic split, a folder of PDFs), stand-ins for Detectron2's ImageNet files
(``imagenet/R-{50,101}.pkl`` in the MSRA format, random weights with BatchNorm statistics
calibrated on pixel-scale inputs, see /work/shared/README.md) and a PDF to predict on. The
overrides only make the runs small (CPU, one iteration, 128-px images) or skip what a
one-iteration teacher cannot pass (its AP check).

A block's overrides are keyed by its ``<!-- doc-test: name -->`` marker. Every Markdown page of
docs/, README.md and the pages of tests/test_docs_projects.py is checked: a shell block without a
marker, a marker its test does not know, or a fence without a language (a command block the check
could not see) fails ``test_every_command_block_is_tested``.
"""
import glob
import json
import os

import pytest

import dla_kd  # noqa: F401
from doc_commands import doc_blocks, read_blocks
from docs_fixtures import DISTILL_1, TEST_SIZE, TRAIN_1, run_block as run_doc_block
from test_docs_external_teachers import OVERRIDES as EXTERNAL_TEACHERS
from test_docs_projects import OVERRIDES as STUDIES
from test_docs_reference import OVERRIDES as REFERENCE
from tiny_models import REPO

PAGES = (["README.md"] + sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "**", "*.md"),
                                                                           recursive=True))
         + list(STUDIES))
DOCS = {name: os.path.join(REPO, name) for name in PAGES}

# Unlabeled pages beside labelled ones need two images per batch.
DISTILL_1_MIXED = DISTILL_1 + ["SOLVER.IMS_PER_BATCH", "2"]

# block name -> overrides (one list for every command of the block, or one list per command)
OVERRIDES = {
    "README.md": {
        "setup": None,  # the CI's own commands (test_setup_is_what_ci_runs)
        "quick-start": TRAIN_1,
        "export-predict": [TEST_SIZE, []],
    },
    "docs/getting_started.md": {
        "teacher": TRAIN_1,  # run by conftest's doclaynet_teacher
        "student": TRAIN_1,
        "distill": DISTILL_1,
        "evaluate": TEST_SIZE,
        "extract": ["MODEL.DEVICE", "cpu"],
        "export": TEST_SIZE,
        "predict": [],  # an exported model keeps the test size it was exported with
    },
    "docs/unlabeled.md": {
        "teacher-on-my-pages": TEST_SIZE,
        "train_mydocs.py": None,  # a file the reader saves: written as shown
        "online": DISTILL_1_MIXED,
        "pseudo-label": TEST_SIZE,
        "offline": DISTILL_1,
    },
    "docs/external_teachers.md": EXTERNAL_TEACHERS,  # run by tests/test_docs_external_teachers.py
    **REFERENCE,  # run by tests/test_docs_reference.py
    **STUDIES,  # the studies' READMEs and datasets/README.md: tests/test_docs_projects.py
}
# block name -> files (relative to the workspace) the block must have written
WRITES = {
    "quick-start": ["output/synthetic/mask_rcnn_R_18_GN_tiny_doclaynet/model_final.pth",
                    "output/synthetic/mask_rcnn_R_18_GN_tiny_doclaynet/eval_synthetic_doclaynet_val.json"],
    "export-predict": ["export/quickstart/model.onnx", "predictions/quickstart/summary.json"],
    "student": ["output/doclaynet/mask_rcnn_R_50_FPN_3x/model_final.pth"],
    "distill": ["output/doclaynet/distill/recommended_R_101_to_R_50/model_final.pth"],
    "evaluate": ["output/doclaynet/distill/recommended_R_101_to_R_50/eval_doclaynet_test__model_final.json"],
    "extract": ["export/student/model_student.pth", "export/student/student_config.yaml"],
    "export": ["export/onnx/model.onnx", "export/onnx/export_info.json"],
    "predict": ["predictions/summary.json"],
    "teacher-on-my-pages": ["predictions/teacher/summary.json"],
    "online": ["output/mydocs/recommended_unlabeled/model_final.pth"],
    "pseudo-label": ["datasets/pseudo/mydocs/pseudo_labels.json"],
    "offline": ["output/mydocs/recommended_pseudo/model_final.pth"],
}


def run_block(doc: str, name: str, ws: str):
    """Run block ``name`` of ``doc`` in ``ws`` with its overrides; check that it wrote what it should."""
    run_doc_block(doc_blocks(DOCS[doc], named_only=True)[name], OVERRIDES[doc][name], ws, WRITES.get(name, ()))


def run_doc(doc: str, ws: str, skip=()):
    for name in OVERRIDES[doc]:
        if name not in skip:
            run_block(doc, name, ws)


# --- the tests ------------------------------------------------------------------------------------
def test_every_command_block_is_tested():
    assert {"README.md", "docs/getting_started.md", "docs/training.md", "docs/deployment.md"} <= set(DOCS)
    stale = sorted(set(OVERRIDES) - set(DOCS))
    assert not stale, f"tests name blocks of pages that do not exist: {stale}"
    for doc, path in DOCS.items():
        blocks = read_blocks(path, every=True)
        untyped = [b.line for b in blocks if not b.lang]
        assert not untyped, f"{doc}: fences without a language at lines {untyped} (```bash for commands, ```text otherwise)"
        unnamed = [b.line for b in blocks if b.name is None and b.is_shell]
        assert not unnamed, f"{doc}: shell blocks without a <!-- doc-test: name --> marker at lines {unnamed}"
        names = [b.name for b in blocks if b.name is not None]
        assert names == list(OVERRIDES.get(doc, {})), (
            f"{doc}: the blocks (in order) are {names}; the tests run {list(OVERRIDES.get(doc, {}))}")


@pytest.mark.parametrize("doc", ["README.md", "docs/install.md"])
def test_setup_is_what_ci_runs(doc):
    """The README's two set-up commands are the contract; CI (.ci/run) runs exactly them."""
    setup = [c.text for c in doc_blocks(DOCS[doc], named_only=True)["setup"].commands]
    assert setup == ["bash scripts/setup.sh", ".venv/bin/python -m pytest -q"]
    with open(os.path.join(REPO, ".ci", "run")) as f:
        ci = [line.strip() for line in f if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))]
    assert ci == setup


def test_readme_commands(doc_workspace):
    run_doc("README.md", doc_workspace, skip=("setup",))
    summary = json.load(open(os.path.join(doc_workspace, "predictions", "quickstart", "summary.json")))
    assert summary["failures"] == [] and summary["pages"] == 2, summary  # both pages of report.pdf


def test_getting_started_commands(doclaynet_teacher):
    ws = doclaynet_teacher
    run_doc("docs/getting_started.md", ws, skip=("teacher",))
    info = json.load(open(os.path.join(ws, "export", "onnx", "export_info.json")))
    assert "teacher" not in json.dumps(info.get("classes", "")).lower()
    summary = json.load(open(os.path.join(ws, "predictions", "summary.json")))
    assert summary["failures"] == [] and summary["pages"] == 2, summary  # both pages of report.pdf
    assert sorted(os.path.basename(f) for f in summary["written"]) == ["report_p0001.json", "report_p0002.json"]


def test_unlabeled_commands(doclaynet_teacher):
    ws = doclaynet_teacher
    run_doc("docs/unlabeled.md", ws)
    labels = json.load(open(os.path.join(ws, "datasets", "pseudo", "mydocs", "pseudo_labels.json")))
    assert len(labels["images"]) == 3  # every page of both PDFs under datasets/mydocs (recursively)
