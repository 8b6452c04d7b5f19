#!/usr/bin/env python
"""Gradient interplay of a distillation run's loss terms at its checkpoints:

    python projects/kd_benchmark/tools/kd_gradients.py --config-file output/kd_benchmark/defeat_crosskd/seed42/config.yaml \\
        --checkpoints output/kd_benchmark/defeat_crosskd/seed42/model_0000199.pth ... \\
        --batches 8 --output projects/kd_benchmark/results/analysis/defeat_crosskd_seed42

For every checkpoint, on the same ``--batches`` training batches (the run's data loader and SEED, 0 if < 0;
the ROI sampling reseeded per batch, so every checkpoint sees the same draws): the norm of each
term's gradient (the detection losses; each KD loss of DISTILL.LOSSES, at the weight it trains
with at that iteration) on the student's backbone (bottom-up + FPN) and ROI heads, and the cosine
between every two terms, averaged over the batches (``kd_benchmark/loss_gradients.py``). Writes
``loss_gradients.json`` and ``loss_gradients.md`` to ``--output``.
"""
import argparse
import itertools
import json
import os
import sys

import torch
from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage

import dla_kd  # noqa: F401
from dla_kd.checkpoint import DLACheckpointer
from dla_kd.config import load_config
from dla_kd.engine import Trainer
from dla_kd.utils.cli import run_tool
from dla_kd.utils.files import atomic_write_json, atomic_write_text

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's package
from kd_benchmark.loss_gradients import batch_interplay, loss_terms, mean_interplay, parameter_groups  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the run's distillation config (e.g. its config.yaml)")
    parser.add_argument("--checkpoints", nargs="+", required=True, metavar="PTH")
    parser.add_argument("--batches", type=int, default=8, help="training batches per checkpoint")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    return parser.parse_args(argv)


def markdown(report) -> str:
    lines = [f"Loss-term gradients of `{report['config']}` on {report['batches']} training batches "
             "(mean over batches; norms of the weighted terms, cosines between terms).", ""]
    for group in ("backbone", "roi_heads"):
        first = report["checkpoints"][0]["groups"][group]
        norms, cosines = list(first["norm"]), list(first["cosine"])
        lines += [f"**{group}**", "",
                  "| iteration | " + " | ".join(f"\\|g\\| {t}" for t in norms) + " | "
                  + " | ".join(f"cos {c.replace('|', ' / ')}" for c in cosines) + " |",
                  "|---:|" + "---:|" * (len(norms) + len(cosines))]
        for ckpt in report["checkpoints"]:
            g = ckpt["groups"][group]
            lines.append(f"| {ckpt['iteration']} | " + " | ".join(f"{g['norm'][t]:.3g}" for t in norms) + " | "
                         + " | ".join(f"{g['cosine'][c]:+.3f}" for c in cosines) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    for path in args.checkpoints:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint {path} not found")
    cfg = load_config(args.config_file, args.opts)
    seed = cfg.SEED if cfg.SEED >= 0 else 0  # SEED < 0 (Detectron2: random) -> 0: the same batches every call
    seed_all_rng(seed)
    batches = list(itertools.islice(iter(Trainer.build_train_loader(cfg)), args.batches))
    model = build_model(cfg)
    groups = parameter_groups(model.student)
    distillers = list(cfg.DISTILL.LOSSES)
    report = {"config": args.config_file, "batches": args.batches, "seed": seed, "opts": args.opts, "checkpoints": []}
    for path in args.checkpoints:
        iteration = DLACheckpointer(model).load(path).get("iteration", -1)
        model.train()
        per_batch = []
        for i, batch in enumerate(batches):
            torch.manual_seed(seed + i)
            with EventStorage(max(iteration, 0)):
                losses = model(batch)
            per_batch.append(batch_interplay(losses, loss_terms(list(losses), distillers), groups))
        report["checkpoints"].append({"checkpoint": path, "iteration": iteration, "groups": mean_interplay(per_batch)})
        print(f"{path} (iteration {iteration}): " + json.dumps(report["checkpoints"][-1]["groups"]["backbone"]),
              flush=True)
    os.makedirs(args.output, exist_ok=True)
    atomic_write_json(os.path.join(args.output, "loss_gradients.json"), report, indent=2)
    atomic_write_text(os.path.join(args.output, "loss_gradients.md"), markdown(report) + "\n")
    print(f"written: {args.output}/loss_gradients.{{json,md}}")
    return 0


if __name__ == "__main__":
    run_tool(main)
