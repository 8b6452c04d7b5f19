"""Running a detector in any of its forms behind one call: a *runner* maps a (3, h, w) float32
image (resized, model input format, see :func:`.processing.preprocess`) to raw Instances on it
(``pred_boxes`` XYXY, ``scores``, ``pred_classes``, ``pred_masks`` (N, 1, M, M) probabilities).

* :class:`TorchRunner`: a PyTorch ``GeneralizedRCNN`` (``GeneralizedRCNN.inference`` without
  post-processing, exactly what was traced); also several images in one forward (``batch``);
* :class:`TorchScriptRunner`: a traced ``.ts`` file;
* :class:`ScriptedRunner`: a scripted ``.ts`` file (called with a tuple of image dicts);
* :class:`OnnxRunner`: an ``.onnx`` file in onnxruntime (CPU; as many threads as torch by default).

:func:`run_batch` runs several images: one forward where the runner takes a batch (PyTorch), one
call per image otherwise (the exported graphs take one image).
:func:`load_exported` opens an export folder or file with its ``export_info.json``.
"""
import json
import os
from typing import List, Optional, Tuple

import torch
from detectron2.structures import Instances

from .info import EXPORT_INFO_FILE, read_export_info
from .spec import ModelSpec
from .tracing import IMAGE_SIZE_OUTPUT, INPUT_NAME, outputs_to_instances, raw_inference


class TorchRunner:
    backend = "pytorch"

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()

    def __call__(self, image: torch.Tensor) -> Instances:
        with torch.no_grad():
            return raw_inference(self.model, image.to(self.model.device))

    def batch(self, images: List[torch.Tensor]) -> List[Instances]:
        """Raw detections of several images in one forward (padded together as in training)."""
        with torch.no_grad():
            return self.model.inference([{"image": im.to(self.model.device)} for im in images], do_postprocess=False)


class TorchScriptRunner:
    backend = "torchscript"

    def __init__(self, path: str, output_names: List[str]):
        self.module = torch.jit.load(path, map_location="cpu").eval()
        self.output_names = list(output_names)

    def __call__(self, image: torch.Tensor) -> Instances:
        with torch.no_grad():
            outputs = self.module(image)
        return outputs_to_instances(dict(zip(self.output_names, outputs)))


class ScriptedRunner:
    backend = "torchscript-script"

    def __init__(self, path: str, output_names: List[str]):
        self.module = torch.jit.load(path, map_location="cpu")  # eval mode frozen in by scripting
        self.output_names = list(output_names)

    def __call__(self, image: torch.Tensor) -> Instances:
        with torch.no_grad():
            fields = self.module(({"image": image},))[0]
        size = torch.tensor(image.shape[1:])  # the raw detections refer to the (unpadded) input
        return outputs_to_instances({**fields, IMAGE_SIZE_OUTPUT: size})


def onnx_session_options(num_threads: Optional[int] = None):
    """onnxruntime session options of every CPU session here: errors-only log, ``num_threads``
    intra-op threads (default: as many as torch), one inter-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.intra_op_num_threads = num_threads or torch.get_num_threads()  # as many as torch
    options.inter_op_num_threads = 1
    return options


class OnnxRunner:
    backend = "onnx"

    def __init__(self, path: str, output_names: List[str], num_threads: Optional[int] = None):
        import onnxruntime as ort

        self.session = ort.InferenceSession(path, onnx_session_options(num_threads), providers=["CPUExecutionProvider"])
        self.output_names = list(output_names)

    def __call__(self, image: torch.Tensor) -> Instances:
        outputs = self.session.run(self.output_names, {INPUT_NAME: image.detach().cpu().numpy()})
        return outputs_to_instances({n: torch.from_numpy(o) for n, o in zip(self.output_names, outputs)})


def run_batch(runner, images: List[torch.Tensor]) -> List[Instances]:
    """Raw detections of each image: one forward with ``runner.batch`` where it has one, else one
    call per image."""
    batch = getattr(runner, "batch", None)
    return batch(images) if batch is not None and len(images) > 1 else [runner(im) for im in images]


RUNNERS = {"torchscript": TorchScriptRunner, "torchscript-script": ScriptedRunner, "onnx": OnnxRunner}


def exported_runner(fmt: str, path: str, output_names: List[str], num_threads: Optional[int] = None):
    """Runner of an exported file of format ``fmt`` (a key of ``RUNNERS``)."""
    if fmt not in RUNNERS:
        raise ValueError(f"Unknown export format {fmt!r}; known: {sorted(RUNNERS)}")
    if fmt == "onnx":
        return OnnxRunner(path, output_names, num_threads)
    return RUNNERS[fmt](path, output_names)


def load_exported(path: str, num_threads: Optional[int] = None) -> Tuple[object, ModelSpec, dict]:
    """(runner, spec, export info) of an exported model: ``path`` is the export folder or the
    model file in it; ``export_info.json`` must be next to the file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Exported model {path} not found")
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    try:
        info = read_export_info(folder)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{os.path.join(folder, EXPORT_INFO_FILE)} not found: an exported model is read with the "
            "export_info.json written next to it by tools/export_model.py"
        ) from None
    except (json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{os.path.join(folder, EXPORT_INFO_FILE)} is not a valid export info: {e}") from e
    model_file = path if os.path.isfile(path) else os.path.join(folder, info["file"])
    if not os.path.isfile(model_file):
        raise FileNotFoundError(f"Exported model {model_file} not found")
    names = [o["name"] for o in info["outputs"]]
    return exported_runner(info["format"], model_file, names, num_threads), ModelSpec.from_dict(info["spec"]), info
