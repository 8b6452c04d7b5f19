"""TorchScript export by scripting (Detectron2's ``scripting_with_instances``, as
``tools/deploy/export_model.py --export-method scripting``): control flow is kept, so the file
takes a batch of images: ``module(({"image": image_1}, {"image": image_2}, ...))`` returns one
dict of raw fields per image (no ``image_size``: it is the input's (h, w)).

Detectron2 limitation: Cascade R-CNN does not script (``CascadeROIHeads._forward_box`` has no type
annotations, so ``features[f]`` with a ``str`` key is rejected); use the traced format for it.
"""
from typing import Dict, List, Tuple

import torch
from detectron2.export import scripting_with_instances
from detectron2.modeling import GeneralizedRCNN
from detectron2.structures import Boxes
from torch import Tensor, nn

from .errors import ExportError

# The Instances fields the scripted inference may set, with their types.
SCRIPTED_FIELDS = {
    "proposal_boxes": Boxes, "objectness_logits": Tensor, "pred_boxes": Boxes,
    "scores": Tensor, "pred_classes": Tensor, "pred_masks": Tensor,
}


class ScriptableAdapter(nn.Module):
    """Images -> per-image dicts of raw fields (dicts, not Instances: pytorch/pytorch#46944)."""

    def __init__(self, model: GeneralizedRCNN):
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, inputs: Tuple[Dict[str, Tensor]]) -> List[Dict[str, Tensor]]:
        instances = self.model.inference(inputs, do_postprocess=False)
        return [i.get_fields() for i in instances]


def export_scripted(model: GeneralizedRCNN, image: torch.Tensor, path: str) -> List[str]:
    """Script ``model`` into ``path``; return the output field names (from one call on ``image``)."""
    try:
        scripted = scripting_with_instances(ScriptableAdapter(model.eval()), SCRIPTED_FIELDS)
    except Exception as e:  # TorchScript's compiler errors name the function and line
        first_line = next((line for line in str(e).strip().splitlines() if line.strip()), "")
        raise ExportError(
            f"TorchScript scripting of {type(model.roi_heads).__name__} failed: {type(e).__name__}: "
            f"{first_line} (use --format torchscript, i.e. tracing)"
        ) from e
    torch.jit.save(scripted, path)
    with torch.no_grad():
        return sorted(scripted(({"image": image},))[0])
