"""Bad data fails when a dataset is loaded, before training: unreadable images and sizes that
disagree with the json (all named in one error), polygons far outside their page (a warning), and
dla-kd's log lines in ``OUTPUT_DIR/log.txt``."""
import json
import logging
import os
import subprocess
import sys

import pytest
from PIL import Image

import dla_kd  # noqa: F401
from detectron2.data import DatasetCatalog
from dla_kd.data import PUBLAYNET_CATEGORIES, CorruptAnnotationError, load_layout_coco_json
from dla_kd.data import image_check
from layout_files import publaynet_like, write_image
from tiny_models import REPO, TINY

PAGES = [{"id": i, "file_name": f"p{i}.png", "width": 60, "height": 80} for i in range(1, 6)]


def _load(json_path):
    return load_layout_coco_json(json_path, os.path.join(os.path.dirname(json_path), "val"), PUBLAYNET_CATEGORIES)


def _truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


@pytest.fixture
def five_pages(tmp_path, monkeypatch):
    """A PubLayNet-layout root with 5 good 60x80 pages, registered as ``publaynet_val``."""
    monkeypatch.delenv(image_check.ENV_MODE, raising=False)
    monkeypatch.delenv(image_check.ENV_CACHE_DIR, raising=False)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    json_path = publaynet_like(str(tmp_path), annotations=[], images=PAGES)
    return json_path, os.path.join(str(tmp_path), "publaynet", "val")


def test_corrupt_images_all_named_in_one_error_when_loaded(five_pages):
    json_path, image_dir = five_pages
    open(os.path.join(image_dir, "p2.png"), "wb").close()  # 0 bytes
    with open(os.path.join(image_dir, "p3.png"), "wb") as f:
        f.write(os.urandom(300))
    _truncate(os.path.join(image_dir, "p4.png"))
    with pytest.raises(CorruptAnnotationError) as err:
        DatasetCatalog.get("publaynet_val")  # what build_detection_train_loader calls first
    msg = str(err.value)
    assert msg.startswith(json_path) and "3 of 5 images are unreadable" in msg
    for image_id in (2, 3, 4):
        assert f"image {image_id} ({os.path.join(image_dir, f'p{image_id}.png')}): not a readable image" in msg
    assert "truncated" in msg  # the truncated PNG is caught without a full decode
    assert "p1.png" not in msg and "p5.png" not in msg


def test_size_disagreeing_with_json_named(five_pages):
    json_path, image_dir = five_pages
    write_image(os.path.join(image_dir, "p5.png"), size=(80, 60))
    with pytest.raises(CorruptAnnotationError) as err:
        _load(json_path)
    expected = f"image 5 ({os.path.join(image_dir, 'p5.png')}): the json says width x height 60x80, the file is 80x60"
    assert expected in str(err.value)


def test_exif_orientation_counts_as_read_image_sees_it(five_pages):
    """A JPEG stored 80x60 with EXIF orientation 6 is read by Detectron2 as 60x80."""
    json_path, image_dir = five_pages
    data = json.load(open(json_path))
    data["images"][0]["file_name"] = "rotated.jpg"
    json.dump(data, open(json_path, "w"))
    exif = Image.Exif()
    exif[274] = 6
    Image.new("RGB", (80, 60), "white").save(os.path.join(image_dir, "rotated.jpg"), exif=exif)
    assert len(_load(json_path)) == 5


def test_full_decode_switch_and_off(five_pages, monkeypatch):
    """A truncated TIFF (PRImA's format; header first, pixels after) needs the full decode."""
    json_path, image_dir = five_pages
    data = json.load(open(json_path))
    data["images"][0]["file_name"] = "p1.tif"
    json.dump(data, open(json_path, "w"))
    write_image(os.path.join(image_dir, "p1.tif"))
    _truncate(os.path.join(image_dir, "p1.tif"))
    assert len(_load(json_path)) == 5  # header check: the header and its size are fine
    monkeypatch.setenv(image_check.ENV_MODE, "decode")
    with pytest.raises(CorruptAnnotationError, match=r"1 of 5 images .*\n  image 1 \(.*p1\.tif\): not a readable"):
        _load(json_path)
    monkeypatch.setenv(image_check.ENV_MODE, "off")
    assert len(_load(json_path)) == 5
    monkeypatch.setenv(image_check.ENV_MODE, "everything")
    with pytest.raises(ValueError, match="DLA_KD_IMAGE_CHECK must be one of"):
        _load(json_path)


def test_results_cached_by_size_and_mtime(five_pages, monkeypatch, tmp_path):
    json_path, image_dir = five_pages
    probed = []
    real_probe = image_check.probe_image
    monkeypatch.setattr(image_check, "probe_image", lambda p, decode=False: probed.append(p) or real_probe(p, decode))
    _load(json_path)
    assert len(probed) == 5
    assert os.path.isfile(os.path.join(os.path.dirname(json_path), ".val.json.image-check.json"))
    _load(json_path)
    assert len(probed) == 5  # nothing changed: nothing read again
    write_image(os.path.join(image_dir, "p2.png"), size=(80, 60))
    with pytest.raises(CorruptAnnotationError, match="image 2 .* the file is 80x60"):
        _load(json_path)
    assert probed[5:] == [os.path.join(image_dir, "p2.png")]
    monkeypatch.setenv(image_check.ENV_MODE, "decode")  # header results do not stand for a decode
    with pytest.raises(CorruptAnnotationError):
        _load(json_path)
    assert len(probed) == 11
    cache_dir = str(tmp_path / "cache")
    monkeypatch.setenv(image_check.ENV_CACHE_DIR, cache_dir)
    with pytest.raises(CorruptAnnotationError):
        _load(json_path)
    assert len(os.listdir(cache_dir)) == 1


def test_polygon_far_outside_page_warns_with_record(tmp_path, caplog, monkeypatch):
    anns = [
        {"id": 7, "image_id": 1, "category_id": 1, "bbox": [5, 5, 30, 10], "iscrowd": 0,  # 1 px out: fine
         "segmentation": [[5, 5, 61, 5, 61, 15, 5, 15]]},
        {"id": 8, "image_id": 2, "category_id": 1, "bbox": [5, 5, 30, 10], "iscrowd": 0,  # a 2x scan's coordinates
         "segmentation": [[10, 10, 120, 10, 120, 150, 10, 150]]},
    ]
    path = publaynet_like(str(tmp_path), annotations=anns)
    monkeypatch.setattr(logging.getLogger("dla_kd"), "propagate", True)  # in case a tool set up its logger
    with caplog.at_level(logging.WARNING, logger="dla_kd"):
        dicts = _load(path)
    assert sum(len(d["annotations"]) for d in dicts) == 2  # kept
    assert "1 polygons lie more than 10% outside their page" in caplog.text
    assert f"annotation 8 (image 2) in {os.path.join(str(tmp_path), 'publaynet', 'val', 'b.png')}" in caplog.text
    assert "annotation 7" not in caplog.text


def test_train_net_setup_sends_dla_kd_logs_to_log_txt(tmp_path):
    """tools/train_net.py's setup: a dla-kd warning raised while loading data lands in log.txt."""
    anns = [{"id": 8, "image_id": 2, "category_id": 1, "bbox": [5, 5, 30, 10], "iscrowd": 0,
             "segmentation": [[10, 10, 120, 10, 120, 150, 10, 150]]}]
    publaynet_like(str(tmp_path / "data"), annotations=anns)
    out = str(tmp_path / "out")
    script = (
        "import runpy, sys; from detectron2.data import DatasetCatalog\n"
        "tool = runpy.run_path('tools/train_net.py')\n"
        "tool['setup'](tool['default_argument_parser']().parse_args(sys.argv[1:]))\n"
        "DatasetCatalog.get('publaynet_val')\n"
    )
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "data"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script, "--config-file", TINY, "OUTPUT_DIR", out],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = open(os.path.join(out, "log.txt")).read()
    assert "WARNING" in log and "polygons lie more than 10% outside their page" in log and "annotation 8" in log
    assert "Loaded 2 images, 1 instances" in log  # dla-kd's INFO lines too
