"""docs/external_teachers.md runs as written: the results-file teacher's pseudo-labels, the big
Detectron2 teacher trained on them, the recommended KD recipe from it into the student (each
training two steps on small pages), and the rapid-layout plugin when it is installed."""
import json
import os
import re

import pytest
from PIL import Image

from doc_commands import doc_blocks, make_workspace, run_command
from tiny_models import REPO

DOC = os.path.join(REPO, "docs", "external_teachers.md")
RECIPE = os.path.join(REPO, "configs", "doclaynet", "distill", "recommended_R_101_to_R_50.yaml")
# Small pages and two steps; GroupNorm because FrozenBN cannot train from random init (no ImageNet here).
SMALL = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.NORM", "GN",
         "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "160", "INPUT.MIN_SIZE_TEST", "128",
         "INPUT.MAX_SIZE_TEST", "160", "INPUT.CROP.ENABLED", "False", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64",
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", "2",
         "SOLVER.AMP.ENABLED", "False", "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()"]
ENV = {"DETECTRON2_DATASETS": "datasets", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def blocks():
    return doc_blocks(DOC, named_only=True)


def _python_block(name: str) -> str:
    """The ```python block after ``<!-- doc-python: name -->`` (doc_commands runs shell blocks only)."""
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    match = re.search(rf"<!--\s*doc-python:\s*{name}\s*-->\s*```python\n(.*?)```", text, re.S)
    assert match, f"{DOC}: no python block marked {name!r}"
    return match.group(1)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder laid out as the doc assumes: two pages in mydocs/pages, DocLayout-YOLO-style results
    for them in yolo/, and tools/train_mydocs.py made from the doc's snippet."""
    path = make_workspace(str(tmp_path_factory.mktemp("external_docs")), REPO, links=("configs", "scripts"))
    os.makedirs(os.path.join(path, "tools"))
    for name in os.listdir(os.path.join(REPO, "tools")):
        os.symlink(os.path.join(REPO, "tools", name), os.path.join(path, "tools", name))
    with open(os.path.join(REPO, "tools", "train_net.py")) as f:
        train_net = f.read()
    lines = train_net.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("import dla_kd"))  # after its imports
    with open(os.path.join(path, "tools", "train_mydocs.py"), "w") as f:
        f.write("".join(lines[:at + 1]) + _python_block("register") + "".join(lines[at + 1:]))

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
    (command,) = blocks["external-results"].commands
    proc = run_command(command, ["--no-progress"], cwd=workspace, env=ENV)
    assert "2 detections of unmapped classes dropped (abandon 2)" in proc.stdout
    with open(os.path.join(workspace, "datasets", "pseudo", "mydocs_yolo", "pseudo_labels.json")) as f:
        coco = json.load(f)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert len(names) == 11 and sorted(names[a["category_id"]] for a in coco["annotations"]) == [
        "Section-header", "Section-header", "Text", "Text"]
    assert coco["info"]["teacher"]["name"] == "DocLayout-YOLO" and len(coco["info"]["teacher"]["model"]["sha256"]) == 64

    (command,) = blocks["external-big-teacher"].commands
    run_command(command, SMALL, cwd=workspace, env=ENV, timeout=900)
    teacher = os.path.join(workspace, "output", "mydocs", "teacher_R_101", "model_final.pth")
    assert os.path.isfile(teacher)

    if not os.path.isfile(RECIPE):
        pytest.skip(f"{os.path.relpath(RECIPE, REPO)} is not in this checkout yet")
    (command,) = blocks["external-distill"].commands
    assert "DISTILL.TEACHER.WEIGHTS output/mydocs/teacher_R_101/model_final.pth" in command.text
    run_command(command, SMALL + [
        "DISTILL.TEACHER.OPTS", "['MODEL.RESNETS.NORM', 'GN']", "DISTILL.TEACHER.SANITY_CHECK.ENABLED", "False",
        "DISTILL.TEACHER.FEATURE_CACHE.DIR", "", "DISTILL.BALANCE.ITERS", "1"], cwd=workspace, env=ENV, timeout=900)
    student = os.path.join(workspace, "output", "mydocs", "student_R_50_kd")
    assert os.path.isfile(os.path.join(student, "model_final.pth"))
    with open(os.path.join(student, "metrics.json")) as f:
        metrics = [json.loads(line) for line in f if line.strip()]
    assert any("loss_kd_mgd" in m for m in metrics) and any(k.startswith("loss_kd_crosskd") for m in metrics for k in m)


def test_external_plugin_command(blocks, workspace):
    pytest.importorskip("rapid_layout", reason="rapid-layout is not installed (optional extra: pip install -e '.[rapid_layout]')")
    (command,) = blocks["external-plugin"].commands
    run_command(command, ["--threads", "1", "--no-progress"], cwd=workspace, env=ENV)
    with open(os.path.join(workspace, "datasets", "pseudo", "mydocs_cdla", "pseudo_labels.json")) as f:
        coco = json.load(f)
    assert [c["name"] for c in coco["categories"]] == ["text", "title", "list", "table", "figure"]
    assert len(coco["images"]) == 2 and coco["info"]["teacher"]["plugin"] == "rapid-layout"
