"""CPU latency of the deployable model as PyTorch, TorchScript and onnxruntime, on one page at the
config's test size: warm-up runs, then the median of N timed runs of the graph alone (the same
pre/post-processing runs around every backend and is not timed), plus file sizes."""
import logging
import os
from typing import Dict, List, Optional

import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model

from ..inference.info import library_versions
from ..inference.processing import preprocess
from ..inference.runtime import OnnxRunner, TorchRunner, TorchScriptRunner
from ..inference.samples import synthetic_page
from ..inference.spec import ModelSpec
from ..inference.student import build_deployable_model, deployable_cfg
from ..utils.benchmark import time_calls
from ..utils.files import atomic_write_json, atomic_write_text
from .check import compare_detections
from .onnx import DEFAULT_OPSET, export_onnx
from .torchscript import export_torchscript

logger = logging.getLogger(__name__)


def time_runner(runner, image: torch.Tensor, warmup: int, runs: int) -> Dict:
    """Latency statistics (ms) of ``runner(image)`` after ``warmup`` untimed calls, with the
    last call's detections."""
    last = {}

    def call():
        last["outputs"] = runner(image)

    t = time_calls(call, warmup, runs)
    return {"median_ms": t["median_s"] * 1e3, "min_ms": t["min_s"] * 1e3, "max_ms": t["max_s"] * 1e3,
            "detections": len(last["outputs"]), "outputs": last["outputs"]}


def benchmark(cfg: CfgNode, output_dir: str, weights: Optional[str] = None, runs: int = 10, warmup: int = 3,
              threads: int = 2, opset: int = DEFAULT_OPSET) -> Dict:
    """Benchmark the deployable model of ``cfg`` (random init unless ``weights``); the exported
    files go to ``<output_dir>/models``. Returns the report (also written by :func:`write_report`)."""
    torch.set_num_threads(threads)
    if weights:
        plain_cfg, model = build_deployable_model(cfg, weights)
    else:
        plain_cfg = deployable_cfg(cfg)
        torch.manual_seed(0)
        model = build_model(plain_cfg).eval()
    spec = ModelSpec.from_cfg(plain_cfg, model.backbone.size_divisibility)
    image = preprocess(synthetic_page(spec.dataset), spec)
    models = os.path.join(output_dir, "models")
    os.makedirs(models, exist_ok=True)
    files = {"pytorch": os.path.join(models, "model.pth"), "torchscript": os.path.join(models, "model.ts"),
             "onnx": os.path.join(models, "model.onnx")}
    torch.save({"model": model.state_dict()}, files["pytorch"])
    names = export_torchscript(model, image, files["torchscript"])
    export_onnx(model, image, files["onnx"], opset)
    runners = {"pytorch": TorchRunner(model), "torchscript": TorchScriptRunner(files["torchscript"], names),
               "onnx": OnnxRunner(files["onnx"], names, num_threads=threads)}
    results: List[Dict] = []
    reference = None
    for backend, runner in runners.items():
        logger.info(f"Timing {backend} ({warmup} warm-up + {runs} runs)")
        stats = time_runner(runner, image, warmup, runs)
        out = stats.pop("outputs")
        reference = reference if reference is not None else out
        stats["same_detections_as_pytorch"] = compare_detections(reference, out).ok
        results.append({"backend": backend, "file": os.path.relpath(files[backend], output_dir),
                        "file_size_mb": os.path.getsize(files[backend]) / 1e6, **stats})
    return {
        "config": {"architecture": plain_cfg.MODEL.ROI_HEADS.NAME, "backbone": plain_cfg.MODEL.BACKBONE.NAME,
                   "resnet_depth": plain_cfg.MODEL.RESNETS.DEPTH, "min_size_test": spec.min_size_test,
                   "max_size_test": spec.max_size_test},
        "weights": os.path.abspath(weights) if weights else "random init",
        "input_size": list(image.shape[1:]),
        "parameters": sum(p.numel() for p in model.parameters()),
        "threads": threads, "warmup": warmup, "runs": runs, "onnx_opset": opset,
        "load_average_1min": os.getloadavg()[0],
        "versions": library_versions(),
        "results": results,
    }


def markdown_table(report: Dict) -> str:
    h, w = report["input_size"]
    lines = [
        f"CPU latency of the graph alone ({report['threads']} threads, input {h}x{w}, median of "
        f"{report['runs']} runs after {report['warmup']} warm-up; weights: {report['weights']}; "
        f"1-min load average at the end: {report['load_average_1min']:.1f})",
        "",
        "| backend | file | size (MB) | median (ms) | min (ms) | max (ms) | detections | same as PyTorch |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        lines.append(f"| {r['backend']} | {r['file']} | {r['file_size_mb']:.1f} | {r['median_ms']:.0f} | "
                     f"{r['min_ms']:.0f} | {r['max_ms']:.0f} | {r['detections']} | "
                     f"{'yes' if r['same_detections_as_pytorch'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def write_report(report: Dict, output_dir: str) -> Dict[str, str]:
    """``benchmark.json`` and ``benchmark.md`` in ``output_dir``; returns their paths."""
    paths = {"json": os.path.join(output_dir, "benchmark.json"), "markdown": os.path.join(output_dir, "benchmark.md")}
    atomic_write_json(paths["json"], report, indent=2)
    atomic_write_text(paths["markdown"], markdown_table(report))
    return paths
