"""The teacher feature cache at real scale: its size estimated before building (and refused beyond
DISTILL.TEACHER.FEATURE_CACHE.MAX_GB), a cache of a subset of levels, entries read in the data
loader's workers, and an unreadable (truncated) entry named, recomputed and rewritten."""
import logging
import os

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

import dla_kd  # noqa: F401
from dla_kd.distill.feature_cache import (
    FEATURES_KEY,
    CachedFeaturesMapper,
    FeatureCacheTooLargeError,
    entry_bytes,
    estimate_cache_bytes,
    padded_size,
)
from dla_kd.distill.teacher_features import pad_each
from dla_kd.engine import Trainer
from tiny_models import TINY, distill_cfg, fake_batch, save_random_weights, write_config

pytestmark = pytest.mark.usefixtures("one_thread")

FPN = {f"p{k}": (256, 2 ** k) for k in range(2, 7)}  # name -> (channels, stride) of a 256-wide FPN


def test_size_estimate_of_a_real_page_and_of_a_dataset():
    # A 1024 x 1024 page (DocLayNet's PNGs) at Detectron2's 1024/1333 sizes: p2..p6, 256 channels,
    # float16 is about 45 MB: 256 x (256^2 + 128^2 + 64^2 + 32^2 + 16^2) x 2 bytes.
    cells = 256 * (256 ** 2 + 128 ** 2 + 64 ** 2 + 32 ** 2 + 16 ** 2)
    one = estimate_cache_bytes([(1024, 1024)], FPN, 1024, 1333, {"size_divisibility": 32}, "float16")
    assert one == cells * 2 + 1500 and 44e6 < one < 45e6
    # DocLayNet's 69,375 training pages: about 3 TB.
    assert 3.0e12 < 69375 * one < 3.2e12
    # Pages are resized like the training mapper (shortest edge, longest capped), then padded; a
    # subset of levels and float32 scale as they should.
    assert padded_size((800, 1066), {"size_divisibility": 32}) == (800, 1088)
    assert padded_size((500, 300), {"size_divisibility": 32, "square_size": 1024}) == (1024, 1024)
    pages = [(1000, 2000), (2000, 1000), (1000, 2000)]  # -> (667, 1333) twice, (1333, 667)
    p5 = {"p5": (256, 32)}
    expected = 3 * (256 * 21 * 42 * 4 + 1500)  # padded (672, 1344): 21 x 42 cells at stride 32
    assert estimate_cache_bytes(pages, p5, 1024, 1333, {"size_divisibility": 32}, "float32") == expected


def _teacher(tmp_path):
    """(config, weights) of a random 64-wide teacher, written once per test."""
    config, weights = str(tmp_path / "teacher.yaml"), str(tmp_path / "teacher.pth")
    if not os.path.isfile(weights):
        write_config(config, TINY, ["MODEL.FPN.OUT_CHANNELS", "64"])
        save_random_weights(config, weights)
    return config, weights


def _cached_cfg(tmp_path, losses, *opts, dtype="float32"):
    config, weights = _teacher(tmp_path)
    return distill_cfg(config, losses, teacher_weights=weights, opts=[
        "DISTILL.TEACHER.FEATURE_CACHE.DIR", str(tmp_path / "cache"), "DISTILL.TEACHER.FEATURE_CACHE.DTYPE", dtype,
        *opts])


def _register_pages(name, sizes):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [{"file_name": f"p{i}.png", "height": h, "width": w, "image_id": i}
                                           for i, (h, w) in enumerate(sizes)])


def test_cache_size_is_logged_and_refused_beyond_max_gb(tmp_path, caplog):
    """The estimate covers the training pages at the training size; a cache above MAX_GB stops
    the build before anything is written, naming the key to raise; below it, it is logged."""
    _register_pages("cache_size_pages", [(1000, 800)] * 40)
    opts = ["DATASETS.TRAIN", "('cache_size_pages',)", "DISTILL.TEACHER.ALLOW_UNVERIFIED_CLASSES", "True"]
    # fitnet + logit_kd: p2..p6 of the 64-wide teacher; pages resized to 160 x 128 (shortest edge
    # 128, longest at most 160), a multiple of 32 (the tiny models' size divisibility).
    per_page = entry_bytes((160, 128), {f"p{k}": (64, 2 ** k) for k in range(2, 7)}, "float16")
    assert per_page == 64 * (40 * 32 + 20 * 16 + 10 * 8 + 5 * 4 + 3 * 2) * 2 + 1500
    with pytest.raises(FeatureCacheTooLargeError, match=r"DISTILL\.TEACHER\.FEATURE_CACHE\.MAX_GB \(0\.001\)") as e:
        build_model(_cached_cfg(tmp_path, ["fitnet", "logit_kd"], *opts, "DISTILL.TEACHER.FEATURE_CACHE.MAX_GB",
                                "0.001", dtype="float16"))
    assert f"{40 * per_page / 1e9:.3g} GB when full, 40 pages" in str(e.value)
    assert not os.path.exists(tmp_path / "cache")  # refused before building
    with caplog.at_level(logging.INFO, logger="dla_kd.distill.feature_cache"):
        build_model(_cached_cfg(tmp_path, ["fitnet", "logit_kd"], *opts, dtype="float16"))
    assert any(f"about {40 * per_page / 1e9:.3g} GB when full" in r.getMessage() and "free on its disk" in r.getMessage()
               for r in caplog.records)


def _loss_values(model, batch):
    torch.manual_seed(0)
    with EventStorage(0):
        return {k: float(v) for k, v in model(batch).items() if k.startswith("loss_kd_")}


def _entries(folder):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.endswith(".pt"))


def _with_files(batch, tmp_path):
    for i, item in enumerate(batch):
        path = tmp_path / f"page{i}.png"
        path.write_bytes(b"page %d" % i)
        item["file_name"] = str(path)
    return batch


def test_a_cache_of_a_subset_of_levels(tmp_path):
    """LEVELS p3..p6 for fitnet (reads p2..p6): the cache holds p3..p6 (its folder, signature and
    entries), the teacher computes p2 every step, and the losses equal the live run's. A run that
    reads only cached levels (CWD on p3..p6) then reads them from this cache without the teacher."""
    torch.manual_seed(0)
    config, weights = _teacher(tmp_path)
    live = build_model(distill_cfg(config, ["fitnet"], teacher_weights=weights)).train()
    subset = ["DISTILL.TEACHER.FEATURE_CACHE.LEVELS", "['p3', 'p4', 'p5', 'p6']"]
    torch.manual_seed(0)
    cached = build_model(_cached_cfg(tmp_path, ["fitnet"], *subset)).train()
    cached.load_state_dict(live.state_dict())
    batch = _with_files(fake_batch(), tmp_path)
    reference = _loss_values(live, batch)
    first = _loss_values(cached, batch)
    folder = tmp_path / "cache" / "p3-p4-p5-p6"
    assert os.listdir(tmp_path / "cache") == ["p3-p4-p5-p6"]
    assert cached.feature_cache.levels == ["p3", "p4", "p5", "p6"]
    assert '"levels": [\n    "p3"' in (folder / "cache_meta.json").read_text()
    entries = _entries(folder)
    assert len(entries) == 2 and sorted(torch.load(entries[0])) == ["p3", "p4", "p5", "p6"]
    calls = []
    forward = cached.teacher.backbone.forward
    cached.teacher.backbone.forward = lambda x: calls.append(x.shape) or forward(x)
    second = _loss_values(cached, batch)
    assert len(calls) == 1  # p2 is not cached: the teacher runs (both pages in one forward)
    for k, v in reference.items():
        assert first[k] == pytest.approx(v, rel=1e-6) and second[k] == first[k], k

    # CWD on p3..p6 reads the cached levels only: the teacher does not run.
    cwd = build_model(_cached_cfg(tmp_path, ["cwd"], *subset, "DISTILL.CWD.IN_FEATURES", "['p3', 'p4', 'p5', 'p6']")).train()

    def fail(*args, **kwargs):
        raise AssertionError("the teacher backbone ran although every level it would give is cached")

    cwd.teacher.backbone.forward = fail
    assert set(_loss_values(cwd, batch)) == {"loss_kd_cwd"}
    # A cache of more levels than a run reads serves it: p2..p6 filled by fitnet, read by PKD (p2..p5).
    every = ["DISTILL.TEACHER.FEATURE_CACHE.LEVELS", "['p2', 'p3', 'p4', 'p5', 'p6']"]
    _loss_values(build_model(_cached_cfg(tmp_path, ["fitnet"], *every)).train(), batch)
    pkd = build_model(_cached_cfg(tmp_path, ["pkd"], *every)).train()
    assert pkd.feature_cache.directory == str(tmp_path / "cache" / "p2-p3-p4-p5-p6")
    pkd.teacher.backbone.forward = fail
    read = pkd._teacher_per_image(batch, pkd._preprocess(batch)[1])
    assert [sorted(f) for f in read] == [["p2", "p3", "p4", "p5"]] * 2  # only the levels the step reads
    assert set(_loss_values(pkd, batch)) == {"loss_kd_pkd"}
    with pytest.raises(ValueError, match=r"FEATURE_CACHE.LEVELS \['p7'\]: the teacher has no level \['p7'\]"):
        build_model(_cached_cfg(tmp_path, ["fitnet"], "DISTILL.TEACHER.FEATURE_CACHE.LEVELS", "['p7']"))


def _mapped(model, batch):
    """What CachedFeaturesMapper gives the step for ``batch`` (its mapper: the batch's own dicts)."""
    mapper = CachedFeaturesMapper(lambda d: dict(d), model.feature_cache, model.padding)
    return [mapper(item) for item in batch]


def test_entries_are_read_by_the_mapper_and_only_moved_in_the_step(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = build_model(_cached_cfg(tmp_path, ["fitnet", "logit_kd"])).train()
    batch = _with_files(fake_batch(), tmp_path)
    written = _loss_values(model, _mapped(model, batch))  # misses (None): computed and stored
    mapped = _mapped(model, batch)
    t_images = model._preprocess(batch)[1]
    for item, image in zip(mapped, pad_each(t_images, model.padding)):
        feats = item[FEATURES_KEY]
        assert sorted(feats) == ["p2", "p3", "p4", "p5", "p6"] and feats["p2"].device.type == "cpu"
        assert feats["p2"].shape[-2:] == (image.shape[-2] // 4, image.shape[-1] // 4)

    def fail(*args, **kwargs):
        raise AssertionError("the step read the cache or ran the teacher although the mapper gave the features")

    # The estimate's entry size is what is on disk (torch.save's container within its allowance).
    shapes = {k: (64, 2 ** int(k[1])) for k in feats}
    for path in _entries(model.feature_cache.directory):
        assert abs(os.path.getsize(path) - entry_bytes((128, 160), shapes, "float32")) < 500

    model.teacher.backbone.forward = fail
    monkeypatch.setattr(torch, "load", fail)
    assert _loss_values(model, mapped) == written


def _truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


@pytest.mark.parametrize("where", ["step", "mapper"])
def test_a_truncated_entry_is_named_recomputed_and_rewritten(tmp_path, caplog, where):
    torch.manual_seed(0)
    model = build_model(_cached_cfg(tmp_path, ["fitnet"])).train()
    batch = _with_files(fake_batch(), tmp_path)
    reference = _loss_values(model, batch)
    entries = _entries(model.feature_cache.directory)
    good = [torch.load(p) for p in entries]
    _truncate(entries[0])
    with pytest.raises(Exception, match="PytorchStreamReader failed"):
        torch.load(entries[0])  # what torch says on its own
    with caplog.at_level(logging.WARNING, logger="dla_kd.distill.feature_cache"):
        inputs = _mapped(model, batch) if where == "mapper" else batch
        again = _loss_values(model, inputs)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and entries[0] in warnings[0] and "recomputed and rewritten" in warnings[0]
    assert any(item["file_name"] in warnings[0] for item in batch)
    # (recomputed alone, not in one forward with the other page: equal up to float rounding)
    assert again == pytest.approx(reference, rel=1e-6)
    for path, features in zip(entries, good):  # rewritten whole, no temporaries left
        read = torch.load(path)
        assert sorted(read) == sorted(features)
        assert all(torch.allclose(read[k], v, rtol=0, atol=1e-5) for k, v in features.items())
    assert not [f for _, _, fs in os.walk(model.feature_cache.directory) for f in fs if f.endswith(".tmp")]
    # An entry of other content (e.g. written by hand) is refused the same way.
    torch.save({"p2": torch.zeros(1)}, entries[1])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dla_kd.distill.feature_cache"):
        assert _loss_values(model, batch) == pytest.approx(reference, rel=1e-6)
    assert any(entries[1] in r.getMessage() and "holds ['p2']" in r.getMessage() for r in caplog.records)


def test_the_trainer_reads_entries_in_its_loader_workers(use_synthetic_root, tmp_path):
    """tools/train_net.py's trainer wraps its mapper: with a worker process, the batches it yields
    carry the cache entries (None before the first step stored them)."""
    cfg = _cached_cfg(tmp_path, ["fitnet"], "DATALOADER.NUM_WORKERS", "1", "SOLVER.IMS_PER_BATCH", "2",
                      "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(tmp_path / "out"))
    trainer = Trainer(cfg)
    model = trainer._trainer.model
    batch = next(iter(trainer._trainer.data_loader))
    assert all(FEATURES_KEY in item and item[FEATURES_KEY] is None for item in batch)
    _loss_values(model, batch)  # stores the two entries
    stored = _mapped(model, [{k: v for k, v in item.items() if k != FEATURES_KEY} for item in batch])
    assert all(sorted(item[FEATURES_KEY]) == ["p2", "p3", "p4", "p5", "p6"] for item in stored)
