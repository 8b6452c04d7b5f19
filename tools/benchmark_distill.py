#!/usr/bin/env python
"""Cost of distillation: seconds per training step of the student alone, of the teacher's share
of a distillation step alone, and of the distillation step, with peak memory; each phase in a
fresh process, on ``MODEL.DEVICE``.

    python tools/benchmark_distill.py --config-file configs/synthetic/bench/distill/recommended_R_50_GN_to_MNv3_GN.yaml \\
        --output output/benchmarks/distill [--image-size 512] [--batch-size 2] [KEY VALUE ...]

What each phase runs is what training runs:
* ``student_step``: the deployable student's forward, backward and SGD step;
* ``teacher_forward``: the teacher as the distillation step runs it: its backbone on each image
  alone (``DistillGeneralizedRCNN._teacher_per_image``) under ``no_grad`` and
  ``DISTILL.TEACHER.DTYPE`` (half precision on CUDA only), live (the feature cache is off);
* ``distill_step``: the distillation model's forward, backward and step.
With ``SOLVER.AMP.ENABLED`` the two steps run as Detectron2's ``AMPTrainer`` runs them: under
``torch.cuda.amp.autocast`` (float16) with a ``GradScaler``; that autocast acts on CUDA only, so
on a CPU the steps run in float32 as training there does. The device, the AMP setting and the
dtypes the models actually computed in (their FPN outputs) are recorded with the timings.

Target (docs/benchmarks.md): distillation step <= 1.15 x (student step + teacher forward), i.e. no work done
twice. Weights are random (``DISTILL.TEACHER.ALLOW_RANDOM_INIT``): cost does not depend on them.
Writes ``distill_cost.json`` and ``distill_cost.md`` to ``--output``.
"""
import argparse
import json
import os
import subprocess
import sys

import torch

TARGET_RATIO = 1.15


def _batch(n, size, num_classes, seed=0):
    """``n`` pages (3, size, size) with 30 boxes/polygons each: layout-like density."""
    from detectron2.structures import Boxes, Instances, PolygonMasks

    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(n):
        xy = torch.rand(30, 2, generator=g) * size * 0.8
        wh = torch.rand(30, 2, generator=g) * size * 0.2 + 8
        boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=1)
        inst = Instances((size, size))
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = torch.randint(0, num_classes, (30,), generator=g)
        inst.gt_masks = PolygonMasks([[[a, b, c, b, c, d, a, d]] for a, b, c, d in boxes.tolist()])
        image = torch.randint(0, 256, (3, size, size), generator=g).float()
        batch.append({"image": image, "instances": inst, "height": size, "width": size})
    return batch


def _record_dtype(module, into: dict, key: str):
    """Record in ``into[key]`` the dtype(s) of ``module``'s outputs (a dict of features)."""

    def hook(_module, _inputs, output):
        values = output.values() if isinstance(output, dict) else [output]
        into[key] = sorted({str(v.dtype).replace("torch.", "") for v in values})

    return module.register_forward_hook(hook)


def _phase(phase, args):
    """Measure one phase in this process; the result goes to ``args.result_file`` as JSON."""
    torch.set_num_threads(args.threads)
    import contextlib

    import dla_kd  # noqa: F401
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from dla_kd.engine import load_config
    from dla_kd.export import deployable_cfg
    from dla_kd.utils.benchmark import peak_memory_mb, time_calls

    opts = ["DISTILL.TEACHER.ALLOW_RANDOM_INIT", "True", "DISTILL.TEACHER.WEIGHTS", "", *args.opts,
            "DISTILL.TEACHER.FEATURE_CACHE.DIR", ""]
    cfg = load_config(args.config_file, opts)
    batch = _batch(args.batch_size, args.image_size, cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    dtypes = {}
    if phase == "teacher_forward":
        model = build_model(cfg).train()
        _record_dtype(model.teacher.backbone, dtypes, "teacher_features")

        def step():
            model._teacher_per_image(batch, model._preprocess(batch)[1])
    else:
        model = build_model(deployable_cfg(cfg) if phase == "student_step" else cfg).train()
        student = model.student if phase == "distill_step" else model
        _record_dtype(student.backbone, dtypes, "student_features")
        if phase == "distill_step":
            _record_dtype(model.teacher.backbone, dtypes, "teacher_features")
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        amp = cfg.SOLVER.AMP.ENABLED
        # Detectron2's AMPTrainer: torch.cuda.amp.autocast (float16; no effect on CPU tensors) and a GradScaler.
        scaler = torch.cuda.amp.GradScaler(enabled=amp and model.device.type == "cuda")

        def step():
            with EventStorage(0), (torch.cuda.amp.autocast(dtype=torch.float16) if amp else contextlib.nullcontext()):
                loss = sum(model(batch).values())
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    result = time_calls(step, args.warmup, args.iters)
    result.update(peak_memory_mb(cfg.MODEL.DEVICE))
    result["device"] = str(model.device)
    result["computed_dtypes"] = dtypes
    with open(args.result_file, "w") as f:
        json.dump(result, f)


def _run_phase(phase, args) -> dict:
    """Run ``phase`` in a fresh process (clean peak memory); fail loudly if it dies."""
    result_file = os.path.join(args.output, f".{phase}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--phase", phase, "--result-file", result_file,
           "--config-file", args.config_file, "--output", args.output, "--image-size", str(args.image_size),
           "--batch-size", str(args.batch_size), "--warmup", str(args.warmup), "--iters", str(args.iters),
           "--threads", str(args.threads), *args.opts]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.isfile(result_file):
        raise RuntimeError(f"benchmark phase {phase} failed (exit code {proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(result_file) as f:
        result = json.load(f)
    os.remove(result_file)
    return result


def _settings(args, results: dict) -> dict:
    """Device, AMP and dtypes of the measured phases, as recorded in the report."""
    from dla_kd.engine import load_config

    cfg = load_config(args.config_file, ["DISTILL.TEACHER.ALLOW_RANDOM_INIT", "True", *args.opts])
    devices = sorted({r["device"] for r in results.values()})
    amp = bool(cfg.SOLVER.AMP.ENABLED)
    return {
        "device": devices[0] if len(devices) == 1 else devices,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if devices[0].startswith("cuda") else None,
        "amp": {"enabled": amp, "autocast_dtype": "float16" if amp and devices[0].startswith("cuda") else None},
        "teacher_dtype": cfg.DISTILL.TEACHER.DTYPE,
        "computed_dtypes": {
            "student_features": results["distill_step"]["computed_dtypes"]["student_features"],
            "teacher_features": results["teacher_forward"]["computed_dtypes"]["teacher_features"],
        },
    }


def main():
    from dla_kd.utils.files import atomic_write_json, atomic_write_text  # here: the phases import dla_kd after set_num_threads

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a distillation config")
    parser.add_argument("--output", default="output/benchmarks/distill")
    parser.add_argument("--image-size", type=int, default=512, help="square page size fed to the models")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    if args.phase:
        return _phase(args.phase, args)

    os.makedirs(args.output, exist_ok=True)
    results = {}
    for phase in ("student_step", "teacher_forward", "distill_step"):
        results[phase] = _run_phase(phase, args)
        print(f"{phase}: {results[phase]['median_s']:.3f} s/step", flush=True)
    budget = results["student_step"]["median_s"] + results["teacher_forward"]["median_s"]
    ratio = results["distill_step"]["median_s"] / budget
    settings = _settings(args, results)
    report = {
        "config": args.config_file,
        "opts": args.opts,
        **settings,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "phases": results,
        "ratio_distill_to_student_plus_teacher": ratio,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
    }
    atomic_write_json(os.path.join(args.output, "distill_cost.json"), report, indent=2)
    mem_key = next(k for k in results["student_step"] if k.startswith("peak_"))
    lines = [
        f"Distillation cost: `{args.config_file}`, batch {args.batch_size} x {args.image_size}px, {args.threads} threads",
        "",
        f"Device {settings['device']}, AMP {'on' if settings['amp']['enabled'] else 'off'} "
        f"(autocast: {settings['amp']['autocast_dtype'] or 'none'}), DISTILL.TEACHER.DTYPE {settings['teacher_dtype']}; "
        f"computed in: student {'/'.join(settings['computed_dtypes']['student_features'])}, "
        f"teacher {'/'.join(settings['computed_dtypes']['teacher_features'])}",
        "",
        f"| phase | s/step (median) | {mem_key} |",
        "|---|---|---|",
        *[f"| {p} | {r['median_s']:.3f} | {r[mem_key]:.0f} |" for p, r in results.items()],
        "",
        f"distill / (student + teacher) = {ratio:.3f} (target <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'NOT met'})",
    ]
    atomic_write_text(os.path.join(args.output, "distill_cost.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
