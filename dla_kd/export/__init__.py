"""Getting the deployable model out of the toolkit: the student alone (``student``), exported to
TorchScript or ONNX by tracing (``exporter``, ``torchscript``, ``onnx``) or to TorchScript by
scripting (``scripting``), run in any form behind one call (``runtime``), with the steps the graph
leaves to the caller (``processing``), checked against PyTorch (``check``) and benchmarked
(``benchmark``); test-time budgets (``budget``), int8 ONNX by onnxruntime static quantization
(``quantize``, calibrated on ``calibration`` pages) checked by COCO bbox AP (``ap_check``)."""
from .ap_check import APCheck
from .budget import BUDGETS, Budget
from .check import Comparison, compare_detections
from .errors import ExportCheckError, ExportError
from .exporter import FORMATS, ExportResult, Int8Options, export_model
from .processing import postprocess, preprocess
from .runtime import OnnxRunner, ScriptedRunner, TorchRunner, TorchScriptRunner, load_exported
from .spec import Category, ModelSpec
from .student import build_deployable_model, deployable_cfg, extract_student, is_distill_config

__all__ = [
    "build_deployable_model", "deployable_cfg", "extract_student", "is_distill_config",
    "export_model", "ExportResult", "FORMATS", "ExportError", "ExportCheckError",
    "Budget", "BUDGETS", "Int8Options", "APCheck",
    "load_exported", "TorchRunner", "TorchScriptRunner", "ScriptedRunner", "OnnxRunner",
    "preprocess", "postprocess", "ModelSpec", "Category", "Comparison", "compare_detections",
]
