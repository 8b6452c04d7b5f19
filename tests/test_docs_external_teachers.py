"""docs/external_teachers.md runs as written: the results-file teacher's pseudo-labels, the big
Detectron2 teacher trained on them from the ImageNet stand-in, the recommended KD recipe from it
into the student (one step each on small pages, with the small overrides of tests/docs_fixtures.py),
and the rapid-layout plugin when it is installed. ``OVERRIDES`` names every block of the page in
order (tests/test_docs.py checks that no block is left out)."""
import json
import os

import pytest
from PIL import Image

from doc_commands import doc_blocks, make_workspace, run_command
from docs_fixtures import DISTILL_1, TRAIN_1, doclaynet_layout
from tiny_models import REPO

DOC = os.path.join(REPO, "docs", "external_teachers.md")
# block name -> overrides, in the page's order (None: a Python block, written into tools/train_mydocs.py)
OVERRIDES = {
    "external-results": ["--no-progress"],
    "external-plugin": ["--threads", "1", "--no-progress"],
    "register": None,
    "external-big-teacher": TRAIN_1,
    "external-distill": DISTILL_1,
}
ENV = {"DETECTRON2_DATASETS": "datasets", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def blocks():
    return doc_blocks(DOC, named_only=True)


def run_block(blocks, name: str, workspace: str):
    """Run block ``name``'s one command in ``workspace`` with its overrides; returns the process."""
    (command,) = blocks[name].commands
    return run_command(command, OVERRIDES[name], cwd=workspace, env=ENV, timeout=900)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, blocks, imagenet_dir):
    """A folder laid out as the doc assumes: two pages in mydocs/pages, DocLayout-YOLO-style results
    for them in yolo/, tools/train_mydocs.py made from the doc's snippet, the ImageNet stand-ins in
    imagenet/ and DocLayNet's validation split (synthetic pages), where the configs evaluate."""
    path = make_workspace(str(tmp_path_factory.mktemp("external_docs")), REPO, links=("configs", "scripts"))
    os.symlink(imagenet_dir, os.path.join(path, "imagenet"))
    doclaynet_layout(os.path.join(path, "datasets"), {"val": 2})
    os.makedirs(os.path.join(path, "tools"))
    for name in os.listdir(os.path.join(REPO, "tools")):
        os.symlink(os.path.join(REPO, "tools", name), os.path.join(path, "tools", name))
    with open(os.path.join(REPO, "tools", "train_net.py")) as f:
        train_net = f.read()
    lines = train_net.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("import dla_kd"))  # after its imports
    with open(os.path.join(path, "tools", "train_mydocs.py"), "w") as f:
        f.write("".join(lines[:at + 1]) + blocks["register"].source + "".join(lines[at + 1:]))

    pages = os.path.join(path, "mydocs", "pages")
    os.makedirs(pages)
    results = []
    for k, name in enumerate(("p1.png", "p2.png")):
        image = Image.new("RGB", (200, 260), "white")
        image.paste((40, 40, 40), (20, 30 + 10 * k, 180, 60))
        image.paste((90, 90, 90), (20, 90, 180, 200))
        image.save(os.path.join(pages, name))
        results += [
            {"file_name": name, "category_name": "title", "bbox": [20, 30 + 10 * k, 160, 30], "score": 0.9},
            {"file_name": name, "category_name": "plain text", "bbox": [20, 90, 160, 110], "score": 0.8},
            {"file_name": name, "category_name": "abandon", "bbox": [20, 230, 160, 10], "score": 0.7},
        ]
    os.makedirs(os.path.join(path, "yolo"))
    with open(os.path.join(path, "yolo", "predictions.json"), "w") as f:
        json.dump(results, f)
    with open(os.path.join(path, "yolo", "doclayout_yolo_docstructbench_imgsz1024.pt"), "wb") as f:
        f.write(b"DocLayout-YOLO weights (stand-in)")
    return path


def test_external_results_to_big_teacher_to_distilled_student(blocks, workspace):
    proc = run_block(blocks, "external-results", workspace)
    assert "2 detections of unmapped classes dropped (abandon 2)" in proc.stdout
    with open(os.path.join(workspace, "datasets", "pseudo", "mydocs_yolo", "pseudo_labels.json")) as f:
        coco = json.load(f)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert len(names) == 11 and sorted(names[a["category_id"]] for a in coco["annotations"]) == [
        "Section-header", "Section-header", "Text", "Text"]
    assert coco["info"]["teacher"]["name"] == "DocLayout-YOLO" and len(coco["info"]["teacher"]["model"]["sha256"]) == 64

    run_block(blocks, "external-big-teacher", workspace)
    teacher = os.path.join(workspace, "output", "mydocs", "teacher_R_101")
    assert os.path.isfile(os.path.join(teacher, "model_final.pth"))
    assert os.path.isfile(os.path.join(teacher, "eval_doclaynet_val.json"))

    assert "DISTILL.TEACHER.WEIGHTS output/mydocs/teacher_R_101/model_final.pth" in blocks["external-distill"].commands[0].text
    run_block(blocks, "external-distill", workspace)
    student = os.path.join(workspace, "output", "mydocs", "student_R_50_kd")
    assert os.path.isfile(os.path.join(student, "model_final.pth"))
    with open(os.path.join(student, "metrics.json")) as f:
        metrics = [json.loads(line) for line in f if line.strip()]
    assert any("loss_kd_defeat" in m for m in metrics) and any(k.startswith("loss_kd_crosskd") for m in metrics for k in m)


def test_external_plugin_command(blocks, workspace):
    pytest.importorskip("rapid_layout", reason="rapid-layout is not installed (optional extra: pip install -e '.[rapid_layout]')")
    run_block(blocks, "external-plugin", workspace)
    with open(os.path.join(workspace, "datasets", "pseudo", "mydocs_cdla", "pseudo_labels.json")) as f:
        coco = json.load(f)
    assert [c["name"] for c in coco["categories"]] == ["text", "title", "list", "table", "figure"]
    assert len(coco["images"]) == 2 and coco["info"]["teacher"]["plugin"] == "rapid-layout"
