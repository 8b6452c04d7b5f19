"""Fixtures shared by the toolkit's tests (tests/) and the projects' (projects/<name>/tests/): a
tiny synthetic datasets root, one thread, a tiny detector (checkpoint and export), stand-ins for
ImageNet backbone files. The helper modules of tests/ (tiny_models, layout_files, docs_fixtures,
doc_commands) and the projects' packages are importable through pytest.ini's ``pythonpath``."""
import os

import pytest
import torch
from detectron2.modeling import build_model

from dla_kd.data.synthetic import generate_dataset
from dla_kd.engine import load_config
from dla_kd.export import export_model
from doc_commands import doc_blocks
from docs_fixtures import TRAIN_1, clone_workspace, imagenet_standin, run_block
from tiny_models import REPO, TINY, write_config


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


@pytest.fixture(scope="session")
def imagenet_dir(tmp_path_factory):
    """A folder holding stand-ins for Detectron2's ImageNet files, ``R-50.pkl`` and ``R-101.pkl``
    (MSRA format, see ``docs_fixtures.imagenet_standin``), for the docs' ``imagenet/`` folder."""
    folder = str(tmp_path_factory.mktemp("imagenet"))
    for depth in (50, 101):
        imagenet_standin(os.path.join(folder, f"R-{depth}.pkl"), depth)
    return folder


@pytest.fixture(scope="module")
def doc_workspace(tmp_path_factory, synthetic_root, imagenet_dir):
    """A folder laid out as a user's clone where the docs' commands run (one per test module; see
    ``docs_fixtures.clone_workspace``)."""
    return clone_workspace(str(tmp_path_factory.mktemp("clone")), synthetic_root, imagenet_dir)


@pytest.fixture(scope="module")
def doclaynet_teacher(doc_workspace):
    """``doc_workspace`` with the R-101 DocLayNet teacher of docs/getting_started.md, trained (one
    iteration) by that page's own block; the distillation commands of the docs start from it."""
    block = doc_blocks(os.path.join(REPO, "docs", "getting_started.md"), named_only=True)["teacher"]
    run_block(block, TRAIN_1, doc_workspace, writes=["output/doclaynet/mask_rcnn_R_101_FPN_3x/model_final.pth",
                                                     "output/doclaynet/mask_rcnn_R_101_FPN_3x/eval_doclaynet_val.json"])
    return doc_workspace


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
