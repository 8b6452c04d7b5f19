"""Wall time and peak memory (RSS) of predicting one large page, as ``tools/predict.py`` does it:
the page, saved as a PNG, goes through :func:`.batch.predict_files` in this process (no loading
worker, so that this process's peak covers decoding the page too), once per output format.

Memory grows with the page and the number of detections whose masks are pasted, not with the
model's quality: the score threshold is set to 0 so that the detector fills its
``TEST.DETECTIONS_PER_IMAGE`` quota, with random weights unless ``MODEL.WEIGHTS`` is given.
"""
import json
import os
import time
from typing import Dict, Sequence

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from PIL import Image

from ..inference.info import library_versions
from ..inference.runtime import TorchRunner
from ..inference.spec import ModelSpec
from ..inference.student import deployable_cfg
from ..utils.benchmark import reset_peak_rss, rss_mb
from .batch import predict_files
from .predictor import Predictor
from .visualize import DEFAULT_VIS_MAX_SIZE


def benchmark_predictor(cfg: CfgNode) -> Predictor:
    """Predictor of ``cfg``'s deployable model: ``MODEL.WEIGHTS``, or random weights (seed 0)."""
    if cfg.MODEL.WEIGHTS:
        return Predictor.from_config(cfg)
    plain_cfg = deployable_cfg(cfg)
    torch.manual_seed(0)
    model = build_model(plain_cfg).eval()
    return Predictor(TorchRunner(model), ModelSpec.from_cfg(plain_cfg, model.backbone.size_divisibility))


def document_page(height: int, width: int, blocks: int = 60, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 white page with grey text-like blocks."""
    rng = np.random.default_rng(seed)
    page = np.full((height, width, 3), 255, np.uint8)
    for _ in range(blocks):
        h, w = int(rng.integers(height // 60, height // 8)), int(rng.integers(width // 10, width // 2))
        y, x = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        page[y:y + h, x:x + w] = int(rng.integers(40, 200))
    return page


def benchmark_page(predictor: Predictor, height: int, width: int, output_dir: str,
                   formats: Sequence[str] = ("rle", "polygons", "boxes"), visualize: bool = True,
                   vis_max_size: int = DEFAULT_VIS_MAX_SIZE) -> Dict:
    """Predict one ``height`` x ``width`` page per output format; time, peak RSS, JSON size."""
    os.makedirs(output_dir, exist_ok=True)
    page_path = os.path.join(output_dir, f"page_{height}x{width}.png")
    Image.fromarray(document_page(height, width)).save(page_path, compress_level=1)
    results = []
    for output_format in formats:
        out = os.path.join(output_dir, output_format)
        reset_peak_rss()
        before = rss_mb().get("rss_mb")
        start = time.perf_counter()
        summary = predict_files(predictor, [page_path], out, output_format=output_format, visualize=visualize,
                                progress=False, batch_size=1, workers=0, vis_max_size=vis_max_size)
        seconds = time.perf_counter() - start
        if summary.failures:
            raise RuntimeError(f"prediction failed: {summary.failures[0]}")
        with open(summary.written[0]) as f:
            detections = len(json.load(f)["detections"])
        results.append({"output_format": output_format, "seconds": seconds, "rss_before_mb": before,
                        "peak_rss_mb": rss_mb()["peak_rss_mb"], "detections": detections,
                        "json_mb": os.path.getsize(summary.written[0]) / 1e6})
    return {"page_size": [height, width], "visualize": visualize, "vis_max_size": vis_max_size,
            "backend": predictor.backend,
            "threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0],
            "versions": library_versions(), "results": results}


def markdown_table(report: Dict) -> str:
    h, w = report["page_size"]
    lines = [
        f"Predicting one {h} x {w} page ({report['backend']}, {report['threads']} threads, PNG "
        f"{'longest side <= ' + str(report['vis_max_size'] or max(h, w)) if report['visualize'] else 'not written'}; "
        f"1-min load average at the end: "
        f"{report['load_average_1min']:.1f}); peak RSS of the whole process",
        "",
        "| output format | detections | time (s) | RSS before (MB) | peak RSS (MB) | JSON (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        before = f"{r['rss_before_mb']:.0f}" if r["rss_before_mb"] is not None else "-"
        lines.append(f"| {r['output_format']} | {r['detections']} | {r['seconds']:.1f} | {before} | "
                     f"{r['peak_rss_mb']:.0f} | {r['json_mb']:.2f} |")
    return "\n".join(lines) + "\n"
