"""Parameters and GFLOPs of a detector in inference, with a fixed head workload.

GFLOPs are Detectron2's ``FlopCountAnalysis`` (one multiply-add = one flop, fvcore's convention),
with fused attention (``scaled_dot_product_attention``) counted, which fvcore alone does not.
Random weights would give an arbitrary number of proposals and detections, so the RPN and
box-predictor output layers are zeroed (proposals = anchors) and a fixed number of detections
goes to the mask head: every model gets the same, realistic workload.
"""
import math
from typing import Dict

import torch
from fvcore.nn.jit_handles import get_shape

from detectron2.modeling import build_model
from detectron2.utils.analysis import FlopCountAnalysis

# Output layers zeroed for a fixed workload (see the module docstring).
FIXED_WORKLOAD_LAYERS = ("anchor_deltas", "objectness_logits", "cls_score", "bbox_pred")


def sdpa_flop_jit(inputs, outputs) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention`` (timm's fused attention), which
    fvcore does not count: q @ k^T and attn @ v, ``B*H*L*S*(D + Dv)`` multiply-adds."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch_heads = math.prod(q[:-2])
    return batch_heads * q[-2] * k[-2] * (q[-1] + v[-1])


def count_gflops(module, inputs) -> float:
    analysis = FlopCountAnalysis(module, inputs)
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis.total() / 1e9


def fix_head_workload(model: torch.nn.Module) -> None:
    """Zero the RPN and box-predictor output layers (see the module docstring)."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(FIXED_WORKLOAD_LAYERS):
                for param in module.parameters():
                    param.zero_()


def fixed_workload_cfg(cfg, detections: int):
    """``cfg`` on the CPU with score threshold 0 and ``detections`` detections per image."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = detections
    return cfg


def fixed_workload_model(cfg, height: int, width: int, detections: int = 20):
    """(model in eval mode with the fixed head workload, its inputs: one random ``height`` x
    ``width`` page) for ``cfg`` (see the module docstring)."""
    model = build_model(fixed_workload_cfg(cfg, detections)).eval()
    fix_head_workload(model)
    image = torch.rand(3, height, width) * 255
    return model, [{"image": image, "height": height, "width": width}]


def measured_cost(model, inputs) -> Dict[str, float]:
    """Parameters (M) and inference GFLOPs (whole model, backbone+FPN) of ``model`` on ``inputs``."""
    with torch.no_grad():
        images = model.preprocess_image(inputs).tensor
        backbone_gflops = count_gflops(model.backbone, (images,))
        gflops = count_gflops(model, inputs)
    return {
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "backbone_params_M": sum(p.numel() for p in model.backbone.parameters()) / 1e6,
        "backbone_gflops": backbone_gflops,
        "gflops": gflops,
    }


def model_cost(cfg, height: int, width: int, detections: int = 20) -> Dict[str, float]:
    """:func:`measured_cost` of ``build_model(cfg)`` on one ``height`` x ``width`` page with
    ``detections`` detections (random weights, fixed workload)."""
    model, inputs = fixed_workload_model(cfg, height, width, detections)
    return {**measured_cost(model, inputs), "input": [height, width], "detections": detections}
