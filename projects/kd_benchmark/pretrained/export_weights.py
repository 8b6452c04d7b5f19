#!/usr/bin/env python
"""Keep the weights of a training checkpoint that later runs load, in fp16, without optimizer state:

    python projects/kd_benchmark/pretrained/export_weights.py \
        output/kd_benchmark_pretrained/pretrain_MNv3_small_BN/model_final.pth \
        projects/kd_benchmark/pretrained/weights/mobilenetv3_small_100_regions.fp16.pth --format timm

``--format timm``: the bottom-up backbone as ``{timm key: tensor}`` for ``MODEL.TIMM.PRETRAINED_PATH``
(the prefix ``backbone.bottom_up.body.`` removed). ``--format d2``: the bottom-up backbone as
``{"model": {"backbone.bottom_up.*": tensor}}`` for ``MODEL.WEIGHTS`` of a Detectron2 ResNet (FrozenBN
takes the BatchNorm statistics). ``--format full``: the whole model as ``{"model": ...}`` (a teacher
for ``DISTILL.TEACHER.WEIGHTS``). Never optimizer state or ``num_batches_tracked``. Writes ``<out>.json`` beside it with the file's
sha256, size, tensor count and the source checkpoint's iteration.
"""
import argparse
import json
import os

import torch

from dla_kd.utils.files import atomic_write, atomic_write_json, file_sha256

PREFIX = "backbone.bottom_up."
PREFIXES = {"timm": PREFIX + "body.", "d2": PREFIX, "full": ""}


def backbone_state(model_state, fmt: str):
    """fp16 copies of the tensors of ``model_state`` (a Detectron2 model state dict) that ``fmt``
    keeps, named for ``fmt``. Raises ``ValueError`` if there are none."""
    prefix = PREFIXES[fmt]
    state = {}
    for key, value in model_state.items():
        if not key.startswith(prefix) or key.endswith("num_batches_tracked"):
            continue
        name = key[len(prefix):] if fmt == "timm" else key
        state[name] = value.half() if value.is_floating_point() else value
    if not state:
        raise ValueError(f"no tensor named {prefix}* in the checkpoint: not a {fmt} backbone?")
    return state


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--format", choices=sorted(PREFIXES), required=True)
    args = parser.parse_args(argv)
    ckpt = torch.load(args.checkpoint, map_location="cpu")
    state = backbone_state(ckpt["model"], args.format)
    payload = state if args.format == "timm" else {"model": state, "__author__": "dla-kd"}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    atomic_write(args.out, lambda f: torch.save(payload, f))
    record = {
        "file": os.path.basename(args.out),
        "sha256": file_sha256(args.out),
        "size_bytes": os.path.getsize(args.out),
        "tensors": len(state),
        "parameters": int(sum(v.numel() for v in state.values())),
        "format": args.format,
        "source_iteration": ckpt.get("iteration"),
    }
    atomic_write_json(args.out + ".json", record)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
