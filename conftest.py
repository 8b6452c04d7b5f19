"""Fixtures shared by the toolkit's tests (tests/) and the projects' (projects/<name>/tests/): a
tiny synthetic datasets root, one thread, a tiny detector (checkpoint and export). The helper
modules of tests/ (tiny_models, layout_files) and the projects' packages are importable through
pytest.ini's ``pythonpath``."""
import os

import pytest
import torch
from detectron2.modeling import build_model

from dla_kd.data.synthetic import generate_dataset
from dla_kd.engine import load_config
from dla_kd.export import export_model
from tiny_models import TINY, write_config


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A datasets root holding small synthetic DocLayNet-style splits (6 train, 2 val pages of
    384x384) where the builtin ``synthetic_doclaynet_{train,val}`` names find them (with
    ``DETECTRON2_DATASETS`` pointing here, they are not regenerated)."""
    root = tmp_path_factory.mktemp("datasets")
    out = os.path.join(str(root), "synthetic", "doclaynet")
    generate_dataset("doclaynet", 6, out, seed=0, split="train", page_size=(384, 384), show_progress=False)
    generate_dataset("doclaynet", 2, out, seed=1, split="val", page_size=(384, 384), show_progress=False)
    return str(root)


@pytest.fixture
def use_synthetic_root(synthetic_root, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", synthetic_root)
    return synthetic_root


@pytest.fixture
def registered():
    """Dataset names a test registers (append them), removed from Detectron2's catalogs afterwards."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    names = []
    yield names
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on 2 shared cores: one thread (torch and onnxruntime) is several times faster
    than two OpenMP threads competing with other processes. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def detector(tmp_path_factory):
    """(config, weights, TorchScript export folder) of a tiny random-init Mask R-CNN with 10
    detections per image (score threshold 0)."""
    folder = tmp_path_factory.mktemp("detector")
    config = write_config(str(folder / "model.yaml"), TINY,
                          ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "10"])
    torch.manual_seed(0)
    weights = str(folder / "model.pth")
    torch.save({"model": build_model(load_config(config)).state_dict()}, weights)
    exported = str(folder / "torchscript")
    export_model(load_config(config), weights, "torchscript", exported, check=False)
    return config, weights, exported
