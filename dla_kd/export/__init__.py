"""Writing the deployable model out of the toolkit: exported to TorchScript or ONNX by tracing
(``exporter``, ``torchscript``, ``onnx``) or to TorchScript by scripting (``scripting``), checked
against PyTorch (``check``) and benchmarked (``benchmark``); int8 ONNX by onnxruntime static
quantization (``quantize``, calibrated on ``calibration`` pages) checked by COCO bbox AP
(``ap_check``). Running the result (runners, pre/post-processing, budgets, the student alone) is
``dla_kd.inference``'s, re-exported here."""
from ..inference.budget import BUDGETS, Budget
from ..inference.processing import postprocess, preprocess
from ..inference.runtime import OnnxRunner, ScriptedRunner, TorchRunner, TorchScriptRunner, load_exported
from ..inference.spec import Category, ModelSpec
from ..inference.student import build_deployable_model, deployable_cfg, extract_student, is_distill_config
from .ap_check import APCheck
from .check import Comparison, compare_detections
from .errors import ExportCheckError, ExportError
from .exporter import FORMATS, ExportResult, Int8Options, export_model

__all__ = [
    "build_deployable_model", "deployable_cfg", "extract_student", "is_distill_config",
    "export_model", "ExportResult", "FORMATS", "ExportError", "ExportCheckError",
    "Budget", "BUDGETS", "Int8Options", "APCheck",
    "load_exported", "TorchRunner", "TorchScriptRunner", "ScriptedRunner", "OnnxRunner",
    "preprocess", "postprocess", "ModelSpec", "Category", "Comparison", "compare_detections",
]
