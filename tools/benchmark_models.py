#!/usr/bin/env python
"""Size and CPU speed of the detectors: parameters, GFLOPs and images/s at a page of short side 800.

    python tools/benchmark_models.py --output output/benchmark [--configs a.yaml b.yaml ...]
        [--short-side 800] [--warmup 2] [--iters 5] [--threads 2] [--skip-large]

Per config: parameters (whole model, backbone+FPN), GFLOPs of backbone+FPN and of the whole
model in inference (Detectron2's ``FlopCountAnalysis``; one multiply-add = one flop, fvcore's
convention), and CPU images/s of backbone+FPN and of the whole model in inference
(``model.eval()``, ``torch.no_grad``, ``--threads`` torch threads, ``--warmup`` untimed runs, then
the best of ``--iters`` timed runs, which is the least disturbed by other load on the machine).
Fused attention (``scaled_dot_product_attention``) is counted, which fvcore alone does not. The
input is a portrait US-letter page resized to short side 800 (1035 x 800, padded to 1056 x 800).

Weights are random, so the number of proposals and detections (the heads' work) would be
arbitrary (random deep features give non-finite boxes). To give every model the same, realistic
workload, the RPN and box-predictor output layers are zeroed (proposals = anchors, every cascade
stage keeps its boxes), the score threshold is 0 and ``--detections`` detections per page (default
20, a typical layout page) go to the mask head: RPN -> ``POST_NMS_TOPK_TEST`` (1000) proposals ->
box head(s) -> NMS -> exactly that many masks. Writes ``benchmark.json`` and ``benchmark.md`` to
``--output``.
"""

import argparse
import logging
import os
import sys
import time
from typing import Dict, List

import torch

import dla_kd  # noqa: F401  (registers the backbones)
from dla_kd.engine import load_config
from dla_kd.evaluation.model_cost import fixed_workload_model, measured_cost
from dla_kd.utils.files import atomic_write_json, atomic_write_text

# (label, config); the publaynet configs stand for every dataset (heads differ by a few classes).
DEFAULT_CONFIGS = [
    ("R-18 Mask R-CNN", "configs/publaynet/mask_rcnn_R_18_FPN_3x.yaml"),
    ("R-50 Mask R-CNN", "configs/publaynet/mask_rcnn_R_50_FPN_3x.yaml"),
    ("R-101 Mask R-CNN", "configs/publaynet/mask_rcnn_R_101_FPN_3x.yaml"),
    ("MobileNetV3-L Mask R-CNN", "configs/publaynet/mask_rcnn_mobilenetv3_large_FPN.yaml"),
    ("ViT-T/16 Mask R-CNN", "configs/publaynet/mask_rcnn_ViT_T_16_FPN.yaml"),
    ("ViT-S/16 Mask R-CNN", "configs/publaynet/mask_rcnn_ViT_S_16_FPN.yaml"),
    ("ViT-B/16 Mask R-CNN", "configs/publaynet/mask_rcnn_ViT_B_16_FPN.yaml"),
    ("DiT-B Mask R-CNN", "configs/publaynet/mask_rcnn_DiT_B_FPN.yaml"),
    ("R-50 Cascade Mask R-CNN", "configs/publaynet/cascade_mask_rcnn_R_50_FPN_3x.yaml"),
    ("DiT-B Cascade Mask R-CNN", "configs/publaynet/cascade_mask_rcnn_DiT_B_FPN.yaml"),
    ("DiT-L Mask R-CNN", "configs/publaynet/mask_rcnn_DiT_L_FPN.yaml"),
]
LARGE = {"configs/publaynet/mask_rcnn_DiT_L_FPN.yaml"}
PAGE_ASPECT = 11 / 8.5  # US letter, portrait


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder for benchmark.json and benchmark.md")
    parser.add_argument("--configs", nargs="*", default=None, help="config files (default: the publaynet set)")
    parser.add_argument("--short-side", type=int, default=800)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--detections", type=int, default=20, help="detections (masks) per page")
    parser.add_argument("--skip-large", action="store_true", help="skip DiT-L (slow on CPU)")
    return parser.parse_args(argv)


def _seconds_per_call(fn, warmup: int, iters: int) -> float:
    """Best of ``iters`` timed calls after ``warmup`` untimed ones (robust to other load on the machine)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def benchmark_config(config_file: str, short_side: int, warmup: int, iters: int, detections: int) -> Dict:
    """Numbers of one config (see the module docstring)."""
    height, width = int(round(short_side * PAGE_ASPECT)), short_side
    model, inputs = fixed_workload_model(load_config(config_file), height, width, detections)
    cost = measured_cost(model, inputs)
    with torch.no_grad():
        images = model.preprocess_image(inputs).tensor
        backbone_seconds = _seconds_per_call(lambda: model.backbone(images), warmup, iters)
        seconds = _seconds_per_call(lambda: model(inputs), warmup, iters)
    return {
        "config": config_file,
        "input": [height, width],
        "params_M": cost["params_M"],
        "backbone_params_M": cost["backbone_params_M"],
        "backbone_gflops": cost["backbone_gflops"],
        "model_gflops": cost["gflops"],
        "detections": detections,
        "load_average_1min": os.getloadavg()[0],
        "backbone_images_per_s": 1.0 / backbone_seconds,
        "seconds_per_image": seconds,
        "images_per_s": 1.0 / seconds,
    }


def to_markdown(rows: List[Dict], threads: int, detections: int) -> str:
    lines = [
        "| model | params (M) | backbone+FPN params (M) | backbone+FPN GFLOPs | model GFLOPs "
        "| backbone+FPN img/s | model img/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['label']} | skipped: {r['skipped']} | | | | | |")
            continue
        lines.append(
            f"| {r['label']} | {r['params_M']:.1f} | {r['backbone_params_M']:.1f} | {r['backbone_gflops']:.0f} | "
            f"{r['model_gflops']:.0f} | {r['backbone_images_per_s']:.2f} | {r['images_per_s']:.2f} |"
        )
    note = (
        f"\nCPU, {threads} torch threads, best of the timed runs, random weights, {detections} detections per page.\n"
    )
    return "\n".join(lines) + "\n" + note


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    configs = [(os.path.splitext(os.path.basename(c))[0], c) for c in args.configs] if args.configs else DEFAULT_CONFIGS
    rows = []
    for label, config_file in configs:
        if args.skip_large and config_file in LARGE:
            rows.append({"label": label, "config": config_file, "skipped": "--skip-large"})
            continue
        print(f"Benchmarking {label} ({config_file}) ...", flush=True)
        row = {
            "label": label,
            **benchmark_config(config_file, args.short_side, args.warmup, args.iters, args.detections),
        }
        print(
            f"  {row['params_M']:.1f}M params, {row['model_gflops']:.0f} GFLOPs, {row['images_per_s']:.2f} img/s",
            flush=True,
        )
        rows.append(row)
    os.makedirs(args.output, exist_ok=True)
    meta = {
        "short_side": args.short_side,
        "threads": args.threads,
        "warmup": args.warmup,
        "iters": args.iters,
        "detections": args.detections,
        "torch": torch.__version__,
        "load_average_1min_at_end": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
    }
    atomic_write_json(os.path.join(args.output, "benchmark.json"), {"settings": meta, "results": rows}, indent=2)
    table = to_markdown(rows, args.threads, args.detections)
    load = meta["load_average_1min_at_end"]
    table += f"Load average at the end: {load:.1f} on {meta['cpu_count']} cores (timings scale with it).\n"
    atomic_write_text(os.path.join(args.output, "benchmark.md"), table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
