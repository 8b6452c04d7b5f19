"""Published DiT/BEiT checkpoints -> dla-kd's ViT backbone (``build_vit_fpn_backbone``).

The one place where DiT/BEiT names are mapped. Used by :func:`convert_dit_checkpoint` (registered
in ``CHECKPOINT_CONVERTERS``, so ``MODEL.WEIGHTS /path/dit-base-224-p16-500k-62d53a.pth`` loads
through ``DLACheckpointer``) and by ``tools/convert_dit_to_d2.py``.

Formats recognised (by the key ``<prefix>blocks.0.attn.qkv.weight``):

* pre-training (unilm ``dit-{base,large}-224-p16-500k-*.pth``, BEiT): a state dict, usually under
  ``"model"``; keys ``cls_token, pos_embed, patch_embed.proj.*, blocks.N.{norm1, attn.qkv.weight,
  attn.q_bias, attn.v_bias, attn.proj, norm2, mlp.fc1, mlp.fc2, gamma_1, gamma_2}``, optionally
  ``rel_pos_bias.relative_position_bias_table`` (shared) or ``blocks.N.attn.relative_position_bias_table``,
  plus pre-training-only ``mask_token, norm.*, lm_head.*`` (or ``fc_norm.*, head.*`` for
  classification fine-tunes), dropped. A prefix before ``blocks.`` (``encoder.``, ``beit.``,
  ``backbone.``, ``module.``) is removed.
  Source of the names: HF transformers ``models/dit/convert_dit_unilm_to_pytorch.py`` (loads
  those files strictly after renaming) and unilm ``ditod/beit.py``.
* DiT layout-detection models (unilm's PubLayNet/ICDAR Detectron2 checkpoints): backbone under
  ``backbone.bottom_up.backbone.`` (the names above plus the adapter ``fpn1.{0,1,3}``, ``fpn2.0``);
  ``backbone.fpn_*``, ``proposal_generator.*``, ``roi_heads.*`` are already Detectron2's.

dla-kd's names (relative to the detector, see ``dla_kd/modeling/backbone``)::

    backbone.bottom_up.encoder.{cls_token, pos_embed, patch_embed.proj.*, blocks.N.*}
    backbone.bottom_up.encoder.rel_pos_bias.{0 (shared) | N}.relative_position_bias_table
    backbone.bottom_up.adapter.branches.{stride4 <- fpn1, stride8 <- fpn2}.*

Shapes are adapted to the target model when it is known: ``pos_embed`` resampled (bicubic) to
the model's pre-training grid, relative-position tables resized (BEiT's interpolation), a shared
table copied to every block of a per-block model.
"""

import logging
import re
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
from timm.layers import resample_abs_pos_embed, resize_rel_pos_bias_table

from .checkpointer import CHECKPOINT_CONVERTERS

logger = logging.getLogger(__name__)

MARKER = "blocks.0.attn.qkv.weight"  # present in every BEiT/DiT checkpoint, found after any prefix
DIT_DETECTION_PREFIX = "backbone.bottom_up.backbone."  # unilm's ditod VIT_Backbone
BOTTOM_UP = "backbone.bottom_up."  # dla-kd's (and Detectron2's) FPN bottom-up
_TABLE = "relative_position_bias_table"

# (regex on the BEiT/DiT name, dla-kd name relative to BOTTOM_UP or None = dropped on purpose).
# First match wins.
BEIT_TO_DLA_KD: List[Tuple[str, Optional[str]]] = [
    (r"^(cls_token|pos_embed)$", r"encoder.\1"),
    (r"^patch_embed\.proj\.(weight|bias)$", r"encoder.patch_embed.proj.\1"),
    (rf"^rel_pos_bias\.{_TABLE}$", rf"encoder.rel_pos_bias.0.{_TABLE}"),
    (rf"^blocks\.(\d+)\.attn\.{_TABLE}$", rf"encoder.rel_pos_bias.\1.{_TABLE}"),
    (r"^(.*\.)?relative_position_index$", None),  # buffer, recomputed
    (r"^blocks\.(\d+)\.(.+)$", r"encoder.blocks.\1.\2"),
    (r"^fpn1\.(.+)$", r"adapter.branches.stride4.\1"),
    (r"^fpn2\.(.+)$", r"adapter.branches.stride8.\1"),
    # pre-training / classification heads and the final norm: not part of a detection backbone
    (r"^(mask_token|norm\.\w+|fc_norm\.\w+|head\.\w+|lm_head\.\w+)$", None),
]


class ConversionReport(NamedTuple):
    converted: Dict[str, str]  # source key -> dla-kd key
    dropped: List[str]  # source keys deliberately not used (pre-training heads, index buffers)
    unmapped: List[str]  # source keys no rule knows (kept under their name -> "unexpected")
    reshaped: List[str]  # dla-kd keys whose tensor was interpolated to the model's shape
    missing: List[str]  # backbone keys of the model the checkpoint does not fill (model known)


def find_beit_prefix(state: Dict[str, torch.Tensor]) -> Optional[str]:
    """The prefix before ``blocks.0.attn.qkv.weight`` in a BEiT/DiT state dict, or ``None``."""
    for key in state:
        if key.endswith(MARKER):
            return key[: -len(MARKER)]
    return None


def unwrap_state_dict(state: Dict) -> Dict[str, torch.Tensor]:
    """Unnest ``{"model": {...}}``/``{"state_dict": {...}}``/``{"module": {...}}`` containers."""
    while isinstance(state, dict) and len(state) >= 1 and not any(torch.is_tensor(v) for v in state.values()):
        nested = [k for k in ("model", "state_dict", "module") if isinstance(state.get(k), dict)]
        if not nested:
            break
        state = state[nested[0]]
    return state


def map_beit_key(name: str) -> Tuple[bool, Optional[str]]:
    """``(known, dla-kd name relative to backbone.bottom_up or None if dropped)`` for a BEiT/DiT name."""
    for pattern, target in BEIT_TO_DLA_KD:
        if re.match(pattern, name):
            return True, (re.sub(pattern, target, name) if target is not None else None)
    return False, None


def _model_root(model_state: Dict[str, torch.Tensor]) -> Optional[str]:
    """Key prefix of the (first) detector in ``model_state`` with a dla-kd BEiT encoder."""
    suffix = BOTTOM_UP + "encoder." + MARKER
    roots = sorted(k[: -len(suffix)] for k in model_state if k.endswith(suffix))
    return roots[0] if roots else None


def _adapt_shapes(out: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor], reshaped: List[str]) -> None:
    """Resize ``pos_embed`` and relative-position tables of ``out`` to the shapes in ``target``;
    copy a shared table to every block of a per-block model."""
    shared = BOTTOM_UP + f"encoder.rel_pos_bias.0.{_TABLE}"
    per_block = sorted(k for k in target if k.startswith(BOTTOM_UP + "encoder.rel_pos_bias.") and k.endswith(_TABLE))
    if shared in out and len(per_block) > 1 and not any(k in out for k in per_block[1:]):
        logger.info(f"Copying the shared relative position table to all {len(per_block)} blocks")
        for key in per_block:
            out[key] = out[shared].clone()
    for key, value in list(out.items()):
        if key not in target or target[key].shape == value.shape:
            continue
        want = target[key].shape
        if key.endswith("encoder.pos_embed"):
            old, new = (value.shape[1] - 1) ** 0.5, (want[1] - 1) ** 0.5
            if old.is_integer() and new.is_integer() and value.shape[2] == want[2]:
                out[key] = resample_abs_pos_embed(value, new_size=[int(new)] * 2, num_prefix_tokens=1, antialias=False)
                reshaped.append(key)
        elif key.endswith(_TABLE) and value.shape[1] == want[1]:
            side = ((want[0] - 3) ** 0.5 + 1) / 2  # (2W-1)^2 + 3 entries for a W x W window
            if side.is_integer():
                out[key] = resize_rel_pos_bias_table(
                    value, new_window_size=(int(side),) * 2, new_bias_shape=tuple(want)
                )
                reshaped.append(key)


def convert_beit_state_dict(
    state: Dict[str, torch.Tensor], model_state: Optional[Dict[str, torch.Tensor]] = None
) -> Tuple[Dict[str, torch.Tensor], ConversionReport]:
    """Rename a BEiT/DiT state dict (pre-training or DiT detection) to dla-kd's detector names
    (``backbone.bottom_up.*``; other Detectron2 keys of detection checkpoints unchanged).

    ``model_state``: the target model's state dict (possibly of a distillation model, whose
    detector sits under a prefix); when given, shapes are adapted to it and backbone keys it has but
    the checkpoint lacks are reported. Raises ``ValueError`` if ``state`` is not BEiT/DiT-like or if
    nothing of it lands in the model.
    """
    state = unwrap_state_dict(state)
    prefix = find_beit_prefix(state)
    if prefix is None:
        raise ValueError(f"Not a BEiT/DiT checkpoint: no key ends with {MARKER!r}")
    out, converted, dropped, unmapped, reshaped = {}, {}, [], [], []
    for key, value in state.items():
        if not key.startswith(prefix):  # detection checkpoints: FPN, RPN and ROI heads
            out[key] = value
            continue
        known, name = map_beit_key(key[len(prefix) :])
        if not known:
            unmapped.append(key)
            out[key] = value
        elif name is None:
            dropped.append(key)
        else:
            out[BOTTOM_UP + name] = value
            converted[key] = BOTTOM_UP + name
    missing = []
    if model_state is not None:
        root = _model_root(model_state) or ""
        target = {k[len(root) :]: v for k, v in model_state.items() if k.startswith(root)}
        _adapt_shapes(out, target, reshaped)
        landed = [k for k in out if k in target]
        if not landed:
            raise ValueError(
                f"No key of the BEiT/DiT checkpoint fits the model (converted e.g. {sorted(out)[:3]}, "
                f"model has e.g. {sorted(target)[:3]}): does MODEL.BACKBONE.NAME build the ViT?"
            )
        missing = sorted(k for k in target if k.startswith(BOTTOM_UP) and k not in out)
    report = ConversionReport(converted, sorted(dropped), sorted(unmapped), sorted(reshaped), missing)
    return out, report


def log_report(report: ConversionReport, log=logger.info) -> None:
    """Log a :class:`ConversionReport` (``log``: e.g. ``print`` for the command-line tool)."""
    log(f"DiT/BEiT checkpoint: {len(report.converted)} tensors renamed to dla-kd names")
    if report.dropped:
        log(f"Dropped (pre-training heads, index buffers): {report.dropped}")
    if report.unmapped:
        log(f"Unexpected (no mapping, kept as is): {report.unmapped}")
    if report.reshaped:
        log(f"Interpolated to the model's shape: {report.reshaped}")
    if report.missing:
        log(f"Missing backbone keys (left at init): {report.missing}")


def convert_dit_checkpoint(model_state: Dict, ckpt_state: Dict) -> Optional[Dict[str, torch.Tensor]]:
    """``CHECKPOINT_CONVERTERS`` entry: a BEiT/DiT checkpoint loaded into a model with dla-kd's ViT
    backbone -> renamed state (relative to the detector); ``None`` for any other checkpoint."""
    root = _model_root(model_state)
    state = unwrap_state_dict(ckpt_state)
    prefix = find_beit_prefix(state)
    if root is None or prefix is None or prefix.endswith(BOTTOM_UP + "encoder."):
        return None  # no dla-kd ViT in the model, not BEiT/DiT, or already dla-kd's names
    out, report = convert_beit_state_dict(state, model_state)
    log_report(report)
    return out


CHECKPOINT_CONVERTERS.append(convert_dit_checkpoint)
