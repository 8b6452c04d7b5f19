"""dla_kd's imports point one way: tools -> predict/export/engine -> inference -> modeling ->
distill/data/checkpoint/config/evaluation -> utils. A module imports its own subpackage and the
layers below it, never a layer above or a sibling of its own layer (predict and export share
``inference`` instead of importing each other), and never ``projects``: studies import the
toolkit, not the reverse. Every import counts, those inside functions too."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dla_kd"
LAYERS = {
    "predict": 4, "export": 4, "engine": 4,
    "inference": 3,
    "modeling": 2,
    "distill": 1, "data": 1, "checkpoint": 1, "config": 1, "evaluation": 1,
    "utils": 0, "_detectron2": 0, "_version": 0,
}
STUDY_PACKAGES = ("projects", "kd_benchmark", "deploy_benchmark")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """(line, imported module) of every import in ``path``, relative ones resolved."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            # "from . import x" / "from dla_kd import x": x may be a subpackage
            names = [f"{name}.{a.name}" for a in node.names] if name in ("dla_kd", package) and not node.module else [name]
            yield from ((node.lineno, n) for n in names)


def _layer(module: str):
    """(subpackage, layer) of a dla_kd module; (None, None) for dla_kd itself."""
    parts = module.split(".")
    if len(parts) < 2:
        return None, None
    return parts[1], LAYERS.get(parts[1])


def violations(files):
    found = []
    for path in files:
        source = _module(path)
        own, level = _layer(source)
        for line, target in _imports(path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
            if target.split(".")[0] in STUDY_PACKAGES:
                found.append(f"{where} (a project: the toolkit never imports a study)")
                continue
            if not target.startswith("dla_kd") or own is None:  # dla_kd/__init__.py is the public facade
                continue
            other, other_level = _layer(target)
            if other is None:
                found.append(f"{where} (the package's facade, which imports every layer)")
            elif other != own and other_level >= level:
                found.append(f"{where} ({own}, layer {level}, may not import {other}, layer {other_level})")
    return found


FILES = sorted(PACKAGE.rglob("*.py"))


def test_every_subpackage_has_a_layer():
    subpackages = {_layer(_module(p))[0] for p in FILES} - {None}
    assert subpackages <= set(LAYERS), f"add to LAYERS: {subpackages - set(LAYERS)}"


def test_no_import_points_upward_or_into_a_project():
    assert violations(FILES) == []


@pytest.mark.parametrize("source, line, why", [
    ("dla_kd/modeling/meta_arch/teacher.py", "from ...engine.setup import load_config\n", "modeling, layer 2, may not import engine"),
    ("dla_kd/export/calibration.py", "def f():\n    from ..predict.inputs import load_page\n", "export, layer 4, may not import predict"),
    ("dla_kd/predict/records.py", "from dla_kd.export import ModelSpec\n", "predict, layer 4, may not import export"),
    ("dla_kd/inference/spec.py", "import dla_kd\n", "the package's facade"),
    ("dla_kd/utils/files.py", "from kd_benchmark.report import load_eval\n", "a project"),
])
def test_the_check_finds_upward_imports(tmp_path, monkeypatch, source, line, why):
    """The check is not vacuous: each known kind of wrong import, written into a copy of the file
    where it was (or would be), is reported."""
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "dla_kd")
    path = tmp_path / source
    path.parent.mkdir(parents=True)
    path.write_text(line)
    (found,) = violations([path])
    assert why in found
