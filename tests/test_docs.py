"""The documentation's commands run: every shell block of README.md, docs/getting_started.md and
docs/unlabeled.md, exactly as written (tests/doc_commands.py), with small overrides appended
(tests/docs_fixtures.py); docs/external_teachers.md's blocks run in
tests/test_docs_external_teachers.py.

They run in a workspace laid out as a user's clone: ``configs``/``tools`` of this repository, a
``datasets/`` folder shaped like the real one (``DocLayNet/COCO/{train,val,test}.json`` +
``DocLayNet/PNG/`` with synthetic pages, the quick start's synthetic split, a folder of PDFs),
stand-ins for Detectron2's ImageNet files (``imagenet/R-{50,101}.pkl`` in the MSRA format,
random weights with BatchNorm statistics calibrated on pixel-scale inputs, see
/work/shared/README.md) and a PDF to predict on. The overrides only make the runs small (CPU,
one iteration, 128-px images) or skip what a one-iteration teacher cannot pass (its AP check).

A block's overrides are keyed by its ``<!-- doc-test: name -->`` marker; a block without a
marker, or with a name its test does not know, fails ``test_every_command_block_is_tested``.
"""
import json
import os

import pytest
from PIL import Image

import dla_kd  # noqa: F401
from doc_commands import doc_blocks, make_workspace, run_command
from docs_fixtures import DISTILL_1, TEST_SIZE, TRAIN_1, doclaynet_layout
from test_docs_external_teachers import OVERRIDES as EXTERNAL_TEACHERS
from tiny_models import REPO

DOCS = {name: os.path.join(REPO, name) for name in (
    "README.md", "docs/getting_started.md", "docs/unlabeled.md", "docs/external_teachers.md")}

# Unlabeled pages beside labelled ones need two images per batch.
DISTILL_1_MIXED = DISTILL_1 + ["SOLVER.IMS_PER_BATCH", "2"]

# block name -> overrides (one list for every command of the block, or one list per command)
OVERRIDES = {
    "README.md": {
        "setup": None,  # the CI's own commands (test_readme_setup_is_what_ci_runs)
        "quick-start": TRAIN_1,
        "export-predict": [TEST_SIZE, []],
    },
    "docs/getting_started.md": {
        "teacher": TRAIN_1,
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
}
# block name -> files (relative to the workspace) the block must have written
WRITES = {
    "quick-start": ["output/synthetic/mask_rcnn_R_18_GN_tiny_doclaynet/model_final.pth",
                    "output/synthetic/mask_rcnn_R_18_GN_tiny_doclaynet/eval_synthetic_doclaynet_val.json"],
    "export-predict": ["export/quickstart/model.onnx", "predictions/quickstart/summary.json"],
    "teacher": ["output/doclaynet/mask_rcnn_R_101_FPN_3x/model_final.pth",
                "output/doclaynet/mask_rcnn_R_101_FPN_3x/eval_doclaynet_val.json"],
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
PDFS = ["report.pdf", "datasets/mydocs/annual_report.pdf", "datasets/mydocs/scans/letter.pdf"]


# --- the workspace --------------------------------------------------------------------------------
def make_pdf(path: str, pages_dir: str, n: int) -> str:
    """A PDF of ``n`` synthetic pages (1 px = 1 pt)."""
    files = sorted(os.listdir(pages_dir))[:n]
    images = [Image.open(os.path.join(pages_dir, f)).convert("RGB") for f in files]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    images[0].save(path, "PDF", resolution=72.0, save_all=True, append_images=images[1:])
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, synthetic_root, imagenet_dir):
    ws = make_workspace(str(tmp_path_factory.mktemp("clone")), REPO, links=("configs", "tools", "scripts"))
    datasets = os.path.join(ws, "datasets")
    doclaynet_layout(datasets, {"train": 3, "val": 2, "test": 2})
    os.makedirs(os.path.join(datasets, "synthetic"))
    os.symlink(os.path.join(synthetic_root, "synthetic", "doclaynet"), os.path.join(datasets, "synthetic", "doclaynet"))
    png = os.path.join(datasets, "DocLayNet", "PNG")
    for pdf, n in zip(PDFS, (2, 2, 1)):
        make_pdf(os.path.join(ws, pdf), png, n)
    os.symlink(imagenet_dir, os.path.join(ws, "imagenet"))
    return ws


ENV = {"DETECTRON2_DATASETS": "datasets", "OMP_NUM_THREADS": "1", "DLA_KD_PAGE_CACHE": ""}


def run_block(doc: str, name: str, ws: str):
    """Run every command of block ``name`` of ``doc`` in ``ws`` with its overrides, then check
    that it wrote what it should."""
    block = doc_blocks(DOCS[doc], named_only=True)[name]
    if not block.is_shell:
        with open(os.path.join(ws, name), "w") as f:
            f.write(block.source)
        return
    overrides = OVERRIDES[doc][name]
    per_command = overrides if overrides and isinstance(overrides[0], list) else [overrides] * len(block.commands)
    assert len(per_command) == len(block.commands), f"{doc} block {name!r}: overrides for {len(per_command)} commands"
    for command, extra in zip(block.commands, per_command):
        run_command(command, extra, cwd=ws, env=ENV, timeout=900)
    missing = [f for f in WRITES.get(name, []) if not os.path.exists(os.path.join(ws, f))]
    assert not missing, f"{doc} block {name!r} ran but did not write {missing}"


def run_doc(doc: str, ws: str, skip=()):
    for name in OVERRIDES[doc]:
        if name not in skip:
            run_block(doc, name, ws)


@pytest.fixture(scope="module")
def doclaynet_teacher(workspace):
    """The teacher of docs/getting_started.md, trained by its own block (unlabeled.md starts from it)."""
    run_block("docs/getting_started.md", "teacher", workspace)
    return workspace


# --- the tests ------------------------------------------------------------------------------------
def test_every_command_block_is_tested():
    for doc, path in DOCS.items():
        blocks = doc_blocks(path)
        unnamed = [b.line for b in blocks if b.name is None and b.is_shell]
        assert not unnamed, f"{doc}: shell blocks without a <!-- doc-test: name --> marker at lines {unnamed}"
        names = [b.name for b in blocks]
        assert names == list(OVERRIDES[doc]), (
            f"{doc}: the blocks (in order) are {names}; tests/test_docs.py runs {list(OVERRIDES[doc])}")


def test_readme_setup_is_what_ci_runs():
    """The README's two set-up commands are the contract; CI (.ci/run) runs exactly them."""
    setup = [c.text for c in doc_blocks(DOCS["README.md"], named_only=True)["setup"].commands]
    assert setup == ["bash scripts/setup.sh", ".venv/bin/python -m pytest -q"]
    with open(os.path.join(REPO, ".ci", "run")) as f:
        ci = [line.strip() for line in f if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))]
    assert ci == setup


def test_readme_commands(workspace):
    run_doc("README.md", workspace, skip=("setup",))
    summary = json.load(open(os.path.join(workspace, "predictions", "quickstart", "summary.json")))
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
