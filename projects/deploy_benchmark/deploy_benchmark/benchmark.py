"""Accuracy and speed of deployable models side by side: for each model x test-time budget x
backend (PyTorch, TorchScript, ONNX fp32, ONNX int8; optionally ONNX int8 with 7-bit weights),
bbox AP on a validation set, median CPU latency per page with each thread count (at the budget's
test size, where the AP is measured, and on an 800-pixel page, the size layout models usually run
at), peak memory and file size.

Every row is written to ``<output>/rows/<model>__<budget>__<backend>.json`` as soon as it is
measured and exports are kept in ``<output>/exports``: an interrupted run resumes where it
stopped. :func:`write_deploy_report` makes ``deploy.json``, ``deploy.md`` and ``deploy.png``
(AP against latency).

For the ONNX backends, onnxruntime's profiler also records where the time of the 800-px page goes
per op type (``op_ms_800px``; :mod:`.op_profile`): the float graph's share in the op types int8
replaces bounds the int8 speedup, reported beside the int8 target.

Latency is the graph alone (the same Python pre/post-processing runs around every backend and is
not timed), median of ``runs`` calls after ``warmup``; the page is the first page of the
validation set. Peak memory is the process's peak resident set size (``VmHWM``, reset before the
runner is built) while the backend's file is loaded and timed: the Python process, torch and the
other loaded models included, so compare rows against each other, not against zero.
"""
import dataclasses
import gc
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from dla_kd.config import load_config
from dla_kd.export.ap_check import bbox_ap
from dla_kd.export.calibration import dataset_records
from dla_kd.export.exporter import INT8_FILE, Int8Options, export_model, quantize_export
from dla_kd.inference.budget import BUDGET_KEYS, Budget, config_value
from dla_kd.inference.info import EXPORT_INFO_FILE
from dla_kd.inference.processing import preprocess
from dla_kd.inference.runtime import OnnxRunner, TorchRunner, TorchScriptRunner
from dla_kd.inference.samples import read_image_rgb
from dla_kd.inference.spec import ModelSpec
from dla_kd.inference.student import build_deployable_model
from dla_kd.utils.benchmark import reset_peak_rss, rss_mb, time_calls
from dla_kd.utils.files import atomic_write_json, atomic_write_text

from .op_profile import int8_speedup_bound, onnx_op_times

logger = logging.getLogger(__name__)

# "onnx-int8-7bit": int8 with onnxruntime's reduce_range (7-bit weights), for CPUs without VNNI,
# whose u8 x s8 kernels saturate with 8-bit weights (dla_kd/export/quantize.py).
BACKENDS = ("pytorch", "torchscript", "onnx", "onnx-int8", "onnx-int8-7bit")
DEFAULT_BACKENDS = BACKENDS[:4]
INT8_BACKENDS = {"onnx-int8": False, "onnx-int8-7bit": True}  # backend -> reduce_range
INT8_LABELS = {"onnx-int8": "int8", "onnx-int8-7bit": "int8 7-bit"}  # op-profile table columns
LATENCY_PAGE = (800, 1333)  # short side, long-side cap of the "800 px" latency page
ROWS_DIR = "rows"
PROFILE_KEY = "op_ms_800px"  # row key: {op type: ms per call} on the 800-px page (ONNX backends)
PROFILED_BACKENDS = ("onnx", *INT8_BACKENDS)
EXPORTS_DIR = "exports"


@dataclass
class DeployModel:
    """A trained model to benchmark: ``name`` (a label, e.g. "teacher"), its training config (plain
    or distillation: the deployable student is taken) and checkpoint."""

    name: str
    config_file: str
    weights: str
    opts: List[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> "DeployModel":
        """``NAME=CONFIG:WEIGHTS``."""
        match = re.fullmatch(r"([\w.-]+)=([^:]+):(.+)", text)
        if not match:
            raise ValueError(f"--model takes NAME=CONFIG:WEIGHTS, got {text!r}")
        name, config_file, weights = match.groups()
        for path in (config_file, weights):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--model {name}: {path} does not exist")
        return cls(name, config_file, weights)


@dataclass
class NamedBudget:
    """A test-time budget with a label for the table: ``fast``, or
    ``lean=fast:MODEL.RPN.POST_NMS_TOPK_TEST=100,MODEL.ROI_HEADS.SCORE_THRESH_TEST=0.3``."""

    label: str
    budget: Budget

    @classmethod
    def parse(cls, text: str) -> "NamedBudget":
        label, _, rest = text.partition("=") if "=" in text.split(":")[0] else (text.split(":")[0], "", text)
        preset, _, pairs = rest.partition(":")
        overrides = []
        for pair in filter(None, pairs.split(",")):
            key, sep, value = pair.partition("=")
            if not sep or key not in BUDGET_KEYS:
                raise ValueError(f"Budget {text!r}: {pair!r} is not KEY=VALUE with KEY one of {sorted(BUDGET_KEYS)}")
            overrides += [key, value]
        return cls(label, Budget(preset or "accurate", overrides))


@dataclass
class DeploySettings:
    dataset: str  # registered validation set with annotations (AP, and the latency page)
    ap_images: int = 100
    backends: Sequence[str] = DEFAULT_BACKENDS
    threads: Sequence[int] = (1, 2)
    runs: int = 10
    warmup: int = 3
    calibration: str = ""  # int8: registered dataset or folder (default: the validation set)
    calibration_images: int = 32


def _row_path(output_dir: str, model: str, budget: str, backend: str) -> str:
    return os.path.join(output_dir, ROWS_DIR, f"{model}__{budget}__{backend}.json")


def _file_mb(path: str) -> float:
    return os.path.getsize(path) / 1e6


class _ModelExports:
    """The files of one model x budget: PyTorch state dict, TorchScript, ONNX fp32 and int8
    (exported once into ``folder``, reused on resume; the 7-bit int8 model, quantized from the
    same float graph, in ``folder/onnx-int8-7bit``)."""

    def __init__(self, model: DeployModel, budget: NamedBudget, folder: str, settings: DeploySettings):
        cfg = load_config(model.config_file, model.opts)
        self.plain_cfg, self.model = build_deployable_model(cfg, model.weights, budget.budget)
        self.spec = ModelSpec.from_cfg(self.plain_cfg, self.model.backbone.size_divisibility)
        self.folder = folder
        self.files: Dict[str, str] = {}
        self.names: Dict[str, List[str]] = {}
        wanted = set(settings.backends)
        pth = os.path.join(folder, "model.pth")
        if "pytorch" in wanted:
            os.makedirs(folder, exist_ok=True)
            if not os.path.isfile(pth):
                torch.save({"model": self.model.state_dict()}, pth)
            self.files["pytorch"] = pth
        if "torchscript" in wanted:
            self._export(cfg, model, budget, "torchscript", None, settings)
        if wanted & {"onnx", *INT8_BACKENDS}:
            self._export(cfg, model, budget, "onnx", self._int8("onnx-int8", settings), settings)
        if "onnx-int8-7bit" in wanted:
            self._quantize_again(model, budget, "onnx-int8-7bit", settings)

    @staticmethod
    def _int8(backend: str, settings: DeploySettings) -> Optional[Int8Options]:
        if backend not in settings.backends:
            return None
        return Int8Options(settings.calibration or settings.dataset, settings.calibration_images,
                           reduce_range=INT8_BACKENDS[backend])

    def _export(self, cfg, model: DeployModel, budget: NamedBudget, fmt: str, int8, settings) -> None:
        out = os.path.join(self.folder, fmt)
        info_path = os.path.join(out, EXPORT_INFO_FILE)
        int8_path = os.path.join(out, INT8_FILE)
        if not os.path.isfile(info_path) or (int8 is not None and not os.path.isfile(int8_path)):
            logger.info(f"Exporting {model.name} ({budget.label}) to {fmt}{' + int8' if int8 else ''}")
            export_model(cfg, model.weights, fmt, out, check=False, config_file=model.config_file,
                         budget=budget.budget, int8=int8)
        with open(info_path) as f:
            names = [o["name"] for o in json.load(f)["outputs"]]
        if fmt == "torchscript":
            self.files["torchscript"], self.names["torchscript"] = os.path.join(out, "model.ts"), names
        else:
            self.files["onnx"], self.names["onnx"] = os.path.join(out, "model.onnx"), names
            if int8 is not None:
                self.files["onnx-int8"], self.names["onnx-int8"] = int8_path, names

    def _quantize_again(self, model: DeployModel, budget: NamedBudget, backend: str, settings) -> None:
        """``backend``'s int8 model: the float ONNX export quantized with its options into
        ``folder/<backend>`` (kept, reused on resume)."""
        out = os.path.join(self.folder, backend)
        int8_path = os.path.join(out, INT8_FILE)
        if not os.path.isfile(os.path.join(out, EXPORT_INFO_FILE)) or not os.path.isfile(int8_path):
            logger.info(f"Quantizing {model.name} ({budget.label}) for {backend}")
            quantize_export(self.model, os.path.join(self.folder, "onnx"), self._int8(backend, settings), out)
        self.files[backend], self.names[backend] = int8_path, self.names["onnx"]

    def runner(self, backend: str, threads: int):
        torch.set_num_threads(threads)
        if backend == "pytorch":
            return TorchRunner(self.model)
        if backend == "torchscript":
            return TorchScriptRunner(self.files[backend], self.names[backend])
        return OnnxRunner(self.files[backend], self.names[backend], num_threads=threads)


def _latency(runner, image: torch.Tensor, settings: DeploySettings) -> float:
    t = time_calls(lambda: runner(image), settings.warmup, settings.runs)
    return t["median_s"] * 1e3


def _page_800(page, exports: _ModelExports) -> torch.Tensor:
    return preprocess(page, dataclasses.replace(exports.spec, min_size_test=LATENCY_PAGE[0],
                                                max_size_test=LATENCY_PAGE[1]))


def op_profile(exports: _ModelExports, backend: str, page, settings: DeploySettings) -> Dict[str, float]:
    """ms per op type of an ONNX backend on the 800-px page with the most threads."""
    return onnx_op_times(exports.files[backend], _page_800(page, exports).numpy(), threads=max(settings.threads),
                         runs=max(3, settings.runs), warmup=settings.warmup)


def measure_row(exports: _ModelExports, backend: str, page, settings: DeploySettings, eval_dir: str) -> Dict:
    """One row: AP (at the budget's test size, with the most threads), latencies, peak memory (and
    the op profile of the ONNX backends)."""
    gc.collect()
    reset_peak_rss()
    at_test_size = preprocess(page, exports.spec)
    at_800 = _page_800(page, exports)
    latency = {}
    for threads in settings.threads:
        runner = exports.runner(backend, threads)
        latency[f"test_size_{threads}t_ms"] = _latency(runner, at_test_size, settings)
        latency[f"800px_{threads}t_ms"] = _latency(runner, at_800, settings)
        del runner
    memory = rss_mb()
    runner = exports.runner(backend, max(settings.threads))
    aps, n_images = bbox_ap({backend: runner}, exports.spec, settings.dataset, settings.ap_images, eval_dir)
    del runner
    profile = {PROFILE_KEY: op_profile(exports, backend, page, settings)} if backend in PROFILED_BACKENDS else {}
    return {**profile,
        "backend": backend, "bbox_AP": aps[backend]["AP"], "bbox_AP50": aps[backend]["AP50"],
        "bbox_AP75": aps[backend]["AP75"], "detections": aps[backend]["detections"], "ap_images": n_images,
        "latency_ms": latency, "peak_rss_mb": memory.get("peak_rss_mb"),
        "file": exports.files[backend],
        "file_size_mb": _file_mb(exports.files[backend]),
        "input_size_test": list(at_test_size.shape[1:]), "input_size_800px": list(at_800.shape[1:]),
        "test_size": [exports.spec.min_size_test, exports.spec.max_size_test],
        "budget_values": {k: config_value(exports.plain_cfg, k) for k in BUDGET_KEYS},
    }


def run_deploy_benchmark(models: Sequence[DeployModel], budgets: Sequence[NamedBudget], settings: DeploySettings,
                         output_dir: str, force: bool = False, measure: bool = True) -> List[Dict]:
    """Measure every model x budget x backend not measured yet (``force``: all again; not
    ``measure``: none, only collect the rows measured earlier); returns all rows (``model`` and
    ``budget`` keys added)."""
    unknown = sorted(set(settings.backends) - set(BACKENDS))
    if unknown:
        raise ValueError(f"Unknown backends {unknown}; choose from {BACKENDS}")
    labels = [b.label for b in budgets]
    if len(set(labels)) != len(labels) or len({m.name for m in models}) != len(models):
        raise ValueError(f"Model names and budget labels must be unique: {[m.name for m in models]}, {labels}")
    page = read_image_rgb(dataset_records(settings.dataset, 1)[0]["file_name"])
    os.makedirs(os.path.join(output_dir, ROWS_DIR), exist_ok=True)
    threads = torch.get_num_threads()
    try:
        return _measure_all(models, budgets, settings, output_dir, force, page, measure)
    finally:
        torch.set_num_threads(threads)


def _read_row(path: str) -> Optional[Dict]:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write_row(path: str, row: Dict) -> None:
    atomic_write_json(path, row, indent=2)


def _work(path: str, backend: str, force: bool) -> Optional[str]:
    """What a row still needs: "row" (all of it), "profile" (a row measured before op profiles
    existed: only the profile is added) or None."""
    row = None if force else _read_row(path)
    if row is None:
        return "row"
    return "profile" if backend in PROFILED_BACKENDS and PROFILE_KEY not in row else None


def _measure_all(models, budgets, settings: DeploySettings, output_dir: str, force: bool, page,
                 measure: bool) -> List[Dict]:
    rows = []
    for model in models:
        for budget in budgets:
            paths = {b: _row_path(output_dir, model.name, budget.label, b) for b in settings.backends}
            todo = {b: _work(p, b, force) for b, p in paths.items()} if measure else {}
            todo = {b: w for b, w in todo.items() if w}
            if todo:
                exports = _ModelExports(model, budget, os.path.join(output_dir, EXPORTS_DIR, model.name, budget.label),
                                        settings)
            for backend, path in paths.items():
                if todo.get(backend) == "row":
                    logger.info(f"Measuring {model.name} / {budget.label} / {backend}")
                    row = measure_row(exports, backend, page, settings,
                                      os.path.join(output_dir, "eval", model.name, budget.label))
                    row.update(model=model.name, budget=budget.label, weights=os.path.abspath(model.weights),
                               config_file=model.config_file, file=os.path.relpath(row["file"], output_dir))
                    _write_row(path, row)
                elif todo.get(backend) == "profile":
                    logger.info(f"Profiling {model.name} / {budget.label} / {backend}")
                    _write_row(path, {**_read_row(path), PROFILE_KEY: op_profile(exports, backend, page, settings)})
                row = _read_row(path)
                if row is not None:
                    rows.append(row)
            if todo:
                del exports
                gc.collect()
    return rows


def _find(rows, model, budget, backend) -> Optional[Dict]:
    return next((r for r in rows if (r["model"], r["budget"], r["backend"]) == (model, budget, backend)), None)


def bar_checks(rows: List[Dict], teacher: str, threads: int) -> List[Dict]:
    """The targets of issue 12, per student: (a) the fastest row of a student within 1 AP of its
    own PyTorch AP (first budget) against the teacher's PyTorch pages/s (first budget), target 3x;
    (b) per student and budget, ONNX int8 against ONNX fp32, target 1.5x within 1 AP. Latency: the
    800-px page with ``threads`` threads."""
    key = f"800px_{threads}t_ms"
    budgets = list(dict.fromkeys(r["budget"] for r in rows))
    if not budgets:
        return []
    teacher_row = _find(rows, teacher, budgets[0], "pytorch")
    checks = []
    for model in dict.fromkeys(r["model"] for r in rows if r["model"] != teacher):
        own = _find(rows, model, budgets[0], "pytorch")
        if teacher_row and own:
            close = [r for r in rows if r["model"] == model and r["bbox_AP"] >= own["bbox_AP"] - 1.0]
            best = min(close, key=lambda r: r["latency_ms"][key])
            speedup = teacher_row["latency_ms"][key] / best["latency_ms"][key]
            checks.append({"check": "student vs teacher PyTorch", "model": model, "row": f"{best['budget']}/{best['backend']}",
                           "speedup": speedup, "ap_delta": best["bbox_AP"] - own["bbox_AP"], "target": 3.0,
                           "passed": speedup >= 3.0})
        for budget, backend in ((b, k) for b in budgets for k in INT8_BACKENDS):
            fp32, int8 = _find(rows, model, budget, "onnx"), _find(rows, model, budget, backend)
            if fp32 and int8:
                speedup = fp32["latency_ms"][key] / int8["latency_ms"][key]
                delta = int8["bbox_AP"] - fp32["bbox_AP"]
                bound = int8_speedup_bound(fp32[PROFILE_KEY]) if PROFILE_KEY in fp32 else None
                checks.append({"check": "int8 vs ONNX fp32", "model": model, "row": f"{budget}/{backend}",
                               "speedup": speedup, "ap_delta": delta, "target": 1.5,
                               "passed": speedup >= 1.5 and delta >= -1.0, "speedup_bound": bound})
    return checks


def markdown_report(rows: List[Dict], checks: List[Dict], meta: Dict) -> str:
    threads = meta["threads"]
    head = ["model", "budget", "backend", "bbox AP", "AP50"]
    head += [f"ms @test size {t}t" for t in threads] + [f"ms @800px {t}t" for t in threads]
    head += [f"pages/s @800px {max(threads)}t", "peak RSS (MB)", "file (MB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lat = r["latency_ms"]
        cells = [r["model"], r["budget"], r["backend"], f"{r['bbox_AP']:.1f}", f"{r['bbox_AP50']:.1f}"]
        cells += [f"{lat[f'test_size_{t}t_ms']:.0f}" for t in threads] + [f"{lat[f'800px_{t}t_ms']:.0f}" for t in threads]
        cells += [f"{1e3 / lat[f'800px_{max(threads)}t_ms']:.2f}", f"{r['peak_rss_mb']:.0f}", f"{r['file_size_mb']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Targets (800-px page, {meta['bar_threads']} thread(s)):", ""]
    for c in checks:
        bound = f"; at most {c['speedup_bound']:.2f}x by the float profile" if c.get("speedup_bound") else ""
        lines.append(f"- {c['check']}: {c['model']} {c['row']}: {c['speedup']:.2f}x (target {c['target']}x{bound}), "
                     f"AP {c['ap_delta']:+.2f} -> {'met' if c['passed'] else 'NOT met'}")
    return "\n".join(lines + profile_tables(rows)) + "\n"


def profile_tables(rows: List[Dict], min_share: float = 0.03) -> List[str]:
    """Markdown: per model and budget with both ONNX profiles, ms per call of each op type taking at
    least ``min_share`` of either graph, the totals, and the float graph's int8 speedup bound."""
    lines = []
    for fp32 in (r for r in rows if r["backend"] == "onnx" and PROFILE_KEY in r):
        int8 = {k: _find(rows, fp32["model"], fp32["budget"], k) for k in INT8_BACKENDS}
        profiles = {"fp32": fp32[PROFILE_KEY], **{INT8_LABELS[k]: r.get(PROFILE_KEY, {}) for k, r in int8.items()
                                                  if r or k == "onnx-int8"}}
        totals = {k: sum(p.values()) for k, p in profiles.items()}
        ops = [op for op in dict.fromkeys([*profiles["fp32"], *profiles["int8"]])
               if any(totals[k] and p.get(op, 0.0) >= min_share * totals[k] for k, p in profiles.items())]
        lines += ["", f"Op profile of {fp32['model']} / {fp32['budget']} (800-px page, onnxruntime profiler, "
                      f"ms per call; ops under {min_share:.0%} of both graphs left out): the float graph can be "
                      f"at most {int8_speedup_bound(profiles['fp32']):.2f}x faster with int8.", "",
                  "| op type | " + " | ".join(f"ONNX {k}" for k in profiles) + " |", "|---" * (1 + len(profiles)) + "|"]
        for op in ops:
            lines.append(f"| {op} | " + " | ".join(f"{p[op]:.1f}" if op in p else "-" for p in profiles.values()) + " |")
        lines.append("| **all nodes** | " + " | ".join(f"{t:.1f}" if t else "-" for t in totals.values()) + " |")
    return lines


def plot_ap_latency(rows: List[Dict], path: str, threads: int) -> None:
    """AP against latency on the 800-px page with ``threads`` threads: colour = model, marker =
    backend, filled = first budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = dict(zip(BACKENDS, "osD^v"))
    models = list(dict.fromkeys(r["model"] for r in rows))
    budgets = list(dict.fromkeys(r["budget"] for r in rows))
    colors = dict(zip(models, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        filled = r["budget"] == budgets[0]
        ax.scatter(r["latency_ms"][f"800px_{threads}t_ms"], r["bbox_AP"], marker=markers[r["backend"]], s=50,
                   facecolors=colors[r["model"]] if filled else "none", edgecolors=colors[r["model"]])
    for m in models:
        ax.scatter([], [], color=colors[m], label=m)
    for b, mk in markers.items():
        ax.scatter([], [], marker=mk, color="grey", label=b)
    ax.set_xscale("log")
    ax.set_xlabel(f"median latency per 800-px page, {threads} thread(s) (ms, log)")
    ax.set_ylabel("bbox AP")
    ax.set_title(f"filled: budget {budgets[0]}; hollow: {', '.join(budgets[1:]) or '-'}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_deploy_report(rows: List[Dict], output_dir: str, meta: Dict, teacher: str) -> Dict[str, str]:
    """``deploy.json`` (rows, targets, ``meta``), ``deploy.md`` and ``deploy.png`` in ``output_dir``."""
    checks = bar_checks(rows, teacher, meta["bar_threads"]) if teacher else []
    paths = {k: os.path.join(output_dir, f"deploy.{k}") for k in ("json", "md", "png")}
    atomic_write_json(paths["json"], {"meta": meta, "rows": rows, "targets": checks}, indent=2)
    atomic_write_text(paths["md"], markdown_report(rows, checks, meta))
    plot_ap_latency(rows, paths["png"], meta["bar_threads"])
    return paths
