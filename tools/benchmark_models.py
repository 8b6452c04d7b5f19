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
import json
import logging
import math
import os
import sys
import time
from typing import Dict, List

import torch
from fvcore.nn.jit_handles import get_shape

import dla_kd  # noqa: F401  (registers the backbones)
from detectron2.modeling import build_model
from detectron2.utils.analysis import FlopCountAnalysis
from dla_kd.engine import load_config

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


def sdpa_flop_jit(inputs, outputs) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention`` (timm's fused attention), which
    fvcore does not count: q @ k^T and attn @ v, ``B*H*L*S*(D + Dv)`` multiply-adds."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch_heads = math.prod(q[:-2])
    return batch_heads * q[-2] * k[-2] * (q[-1] + v[-1])


def _count_gflops(module, inputs) -> float:
    analysis = FlopCountAnalysis(module, inputs)
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis.total() / 1e9


# Output layers zeroed for a fixed workload (see the module docstring).
FIXED_WORKLOAD_LAYERS = ("anchor_deltas", "objectness_logits", "cls_score", "bbox_pred")


def fix_head_workload(model: torch.nn.Module) -> None:
    """Zero the RPN and box-predictor output layers (see the module docstring)."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(FIXED_WORKLOAD_LAYERS):
                for param in module.parameters():
                    param.zero_()


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
    fixed_detections = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", str(detections)]
    cfg = load_config(config_file, ["MODEL.DEVICE", "cpu"] + fixed_detections)
    model = build_model(cfg).eval()
    fix_head_workload(model)
    height, width = int(round(short_side * PAGE_ASPECT)), short_side
    image = torch.rand(3, height, width) * 255
    inputs = [{"image": image, "height": height, "width": width}]
    with torch.no_grad():
        images = model.preprocess_image(inputs).tensor
        backbone_gflops = _count_gflops(model.backbone, (images,))
        model_gflops = _count_gflops(model, inputs)
        backbone_seconds = _seconds_per_call(lambda: model.backbone(images), warmup, iters)
        seconds = _seconds_per_call(lambda: model(inputs), warmup, iters)
    return {
        "config": config_file,
        "input": [height, width],
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "backbone_params_M": sum(p.numel() for p in model.backbone.parameters()) / 1e6,
        "backbone_gflops": backbone_gflops,
        "model_gflops": model_gflops,
        "detections": detections,
        "load_average_1min": os.getloadavg()[0],
        "backbone_images_per_s": 1.0 / backbone_seconds,
        "seconds_per_image": seconds,
        "images_per_s": 1.0 / seconds,
    }


def to_markdown(rows: List[Dict], threads: int, detections: int) -> str:
    lines = [
        f"| model | params (M) | backbone+FPN params (M) | backbone+FPN GFLOPs | model GFLOPs "
        f"| backbone+FPN img/s | model img/s |",
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
    with open(os.path.join(args.output, "benchmark.json"), "w") as f:
        json.dump({"settings": meta, "results": rows}, f, indent=2)
    table = to_markdown(rows, args.threads, args.detections)
    load = meta["load_average_1min_at_end"]
    table += f"Load average at the end: {load:.1f} on {meta['cpu_count']} cores (timings scale with it).\n"
    with open(os.path.join(args.output, "benchmark.md"), "w") as f:
        f.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
