"""Foreground/background-aware feature KD from the ground-truth boxes: DeFeat, FGD, MGD."""
from collections import defaultdict
from typing import Dict

import torch
from detectron2.config import configurable
from torch import nn

from ...utils.events import current_iter
from ..base import DistillContext, register_distiller
from ..losses import ADAPTERS, FGDLoss, MGDLoss, defeat_feature_loss, defeat_fg_masks
from .levels import FeatureDistiller, FeatureLevels


@register_distiller("defeat")
class DeFeatDistiller(FeatureDistiller):
    """DeFeat (Guo et al., CVPR 2021) neck term, as ggjy/DeFeat.pytorch (``mmdet/apis/train.py``
    ``neck-decouple`` branch, masks from ``get_gt_mask`` / ``_map_roi_levels`` in
    ``mmdet/models/dense_heads/anchor_head.py``, adapters from
    ``mmdet/models/detectors/two_stage_kd.py``):

    each GT box marks only the level its scale assigns it to (``defeat_fg_masks``); per level,
    the student goes through its adapter (ADAPTER "conv3x3": DeFeat's near-zero 3x3 conv) and
    ``defeat_feature_loss`` splits the MSE into fg / bg terms (FG_WEIGHT 3, BG_WEIGHT 12); the
    result is averaged over the levels (default p2..p6, all of the reference's FPN outputs).
    ADAPTER "channel" (ours: identity when widths match, else 1x1 conv) is the one variant.
    """

    @configurable
    def __init__(self, *, levels: FeatureLevels, fg_weight: float, bg_weight: float, adapter: str = "conv3x3"):
        super().__init__(levels)
        if adapter not in ADAPTERS:
            raise KeyError(f"DISTILL.DEFEAT.ADAPTER {adapter!r} unknown; known: {sorted(ADAPTERS)}")
        self.adapters = nn.ModuleDict(
            {n: ADAPTERS[adapter](levels.s_channels[n], levels.t_channels[n]) for n in levels.names}
        )
        self.fg_weight, self.bg_weight = fg_weight, bg_weight

    @classmethod
    def from_config(cls, cfg, student, teacher):
        node = cfg.DISTILL.DEFEAT
        return {
            **super().from_config(cfg, student, teacher),
            "fg_weight": node.FG_WEIGHT,
            "bg_weight": node.BG_WEIGHT,
            "adapter": node.ADAPTER,
        }

    def forward(self, ctx: DistillContext) -> Dict[str, torch.Tensor]:
        names = self.levels.names
        masks = defeat_fg_masks(
            [x.gt_boxes for x in ctx.gt_instances], ctx.image_shape,
            [tuple(ctx.s_features[n].shape[-2:]) for n in names], [self.levels.strides[n] for n in names],
            device=ctx.s_features[names[0]].device,
        )
        loss = sum(
            defeat_feature_loss(
                self.adapters[n](ctx.s_features[n]), ctx.t_features[n], mask, self.fg_weight, self.bg_weight,
                valid=self.valid_mask(ctx, n),
            )
            for n, mask in zip(names, masks)
        )
        return {"loss_kd_defeat": loss / len(names)}


@register_distiller("fgd")
class FGDDistiller(FeatureDistiller):
    """FGD (Yang et al., CVPR 2022): one ``FGDLoss`` per level (own align conv and global
    context blocks, as in the official code). Terms summed over levels and logged separately:
    ``loss_kd_fgd_{fg,bg,mask,global}`` (already weighted by ALPHA/BETA/GAMMA/LAMBDA). Levels:
    p2..p5 as yzd-v/FGD
    ``configs/distillers/fgd/fgd_faster_rcnn_r101_fpn_2x_distill_faster_rcnn_r50_fpn_2x_coco.py``
    (``neck.fpn_convs.0..3``)."""

    @configurable
    def __init__(self, *, levels: FeatureLevels, temperature, alpha, beta, gamma, lambda_):
        super().__init__(levels)
        self.losses = nn.ModuleDict(
            {
                n: FGDLoss(levels.s_channels[n], levels.t_channels[n], temperature, alpha, beta, gamma, lambda_)
                for n in levels.names
            }
        )

    @classmethod
    def from_config(cls, cfg, student, teacher):
        node = cfg.DISTILL.FGD
        return {
            **super().from_config(cfg, student, teacher),
            "temperature": node.TEMPERATURE,
            "alpha": node.ALPHA,
            "beta": node.BETA,
            "gamma": node.GAMMA,
            "lambda_": node.LAMBDA,
        }

    def forward(self, ctx: DistillContext) -> Dict[str, torch.Tensor]:
        terms = defaultdict(float)
        for n in self.levels.names:
            masks = ctx.gt_box_masks(n, self.levels.strides[n])
            level_terms = self.losses[n](
                ctx.s_features[n], ctx.t_features[n], masks.fg_weight, masks.bg_weight, valid=self.valid_mask(ctx, n)
            )
            for term, value in level_terms.items():
                terms[term] = terms[term] + value
        return {f"loss_kd_fgd_{term}": value for term, value in terms.items()}


@register_distiller("mgd")
class MGDDistiller(FeatureDistiller):
    """MGD (Yang et al., ECCV 2022): the student, randomly masked, must generate the teacher's
    feature through a small conv block; one ``MGDLoss`` per level, summed. Levels: p2..p5 as
    yzd-v/MGD ``det/configs/distillers/mgd/cascade_mask_rcnn_rx101_32x4d_distill_*_r50_fpn_2x_coco.py``
    (``neck.fpn_convs.0..3``)."""

    @configurable
    def __init__(self, *, levels: FeatureLevels, mask_ratio: float, alpha: float, mask_seed: int = 0):
        super().__init__(levels)
        self.losses = nn.ModuleDict(
            {n: MGDLoss(levels.s_channels[n], levels.t_channels[n], mask_ratio, alpha) for n in levels.names}
        )
        self.mask_seed = int(mask_seed)
        self._generators: Dict[torch.device, torch.Generator] = {}  # one per device, made on first use

    @classmethod
    def from_config(cls, cfg, student, teacher):
        node = cfg.DISTILL.MGD
        # Drawn while the distillers are built (on a fork of the global RNG): fixed by SEED.
        mask_seed = int(torch.randint(0, 2**31 - 1, ()).item())
        return {**super().from_config(cfg, student, teacher), "mask_ratio": node.MASK_RATIO, "alpha": node.ALPHA,
                "mask_seed": mask_seed}

    def mask_generator(self, device="cpu") -> torch.Generator:
        """The random masks' stream on ``device`` (the features'). Ours: the authors' code draws
        them from the global RNG, which shifts every later draw of the student (RoI sampling)
        against the plain run of the same seed, so a zero-weight MGD run would not reproduce it
        (issue 10, part 3). Here they come from a stream of their own, seeded from
        (``mask_seed``, training iteration) at each call: the same masks after ``--resume`` and
        for the same batch at the same iteration (cached or live teacher features); same
        distribution as the authors'.

        The generator lives on the features' device, so a mask is drawn where it is used (a CPU
        generator would copy every level's mask to the GPU, a host sync). CPU and CUDA generators
        are different streams: the same seed gives the same masks on every run of one device
        type, not across device types (on CPU the numbers are those of the former CPU-only
        stream)."""
        device = torch.device(device)
        generator = self._generators.get(device)
        if generator is None:
            generator = self._generators[device] = torch.Generator(device=device)
        return generator.manual_seed(self.mask_seed * 1_000_003 + current_iter(default=0))

    def forward(self, ctx: DistillContext) -> Dict[str, torch.Tensor]:
        generator = self.mask_generator(ctx.s_features[self.levels.names[0]].device)
        loss = sum(
            self.losses[n](ctx.s_features[n], ctx.t_features[n], generator=generator, valid=self.valid_mask(ctx, n))
            for n in self.levels.names
        )
        return {"loss_kd_mgd": loss}
