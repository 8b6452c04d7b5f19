"""Running a deployable model on pages, shared by ``export`` (which writes and checks exported
models) and ``predict`` (which runs them over files): the deployable model of a config, the
student alone for distillation configs (``student``); the model's description (``spec``) and
test-time budgets (``budget``); pages read from images and PDFs (``inputs``, ``samples``); the
steps around the graph (``processing``, page-region mask pasting in ``masks``); the traced
graph's inputs and outputs (``tracing``) and ``export_info.json`` (``info``); one call to run
PyTorch, TorchScript or ONNX models (``runtime``)."""
from .budget import BUDGETS, Budget
from .processing import postprocess, preprocess
from .runtime import OnnxRunner, ScriptedRunner, TorchRunner, TorchScriptRunner, load_exported
from .spec import Category, ModelSpec
from .student import build_deployable_model, deployable_cfg, extract_student, is_distill_config

__all__ = [
    "build_deployable_model", "deployable_cfg", "extract_student", "is_distill_config",
    "Budget", "BUDGETS", "load_exported", "TorchRunner", "TorchScriptRunner", "ScriptedRunner", "OnnxRunner",
    "preprocess", "postprocess", "ModelSpec", "Category",
]
