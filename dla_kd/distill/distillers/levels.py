"""Which feature levels a feature distiller compares, and their widths on both sides.

Every feature loss reads its own ``DISTILL.<NAME>.IN_FEATURES`` (the levels of its reference
implementation by default); an empty list falls back to ``DISTILL.FEATURE.IN_FEATURES``.
"""
from typing import Dict, List, NamedTuple, Tuple

from ..base import Distiller


class FeatureLevels(NamedTuple):
    """names: FPN levels distilled (fine to coarse); s_channels / t_channels / strides per name."""

    names: List[str]
    s_channels: Dict[str, int]
    t_channels: Dict[str, int]
    strides: Dict[str, int]


def level_names(cfg, loss_name: str) -> Tuple[str, List[str]]:
    """(config key used, level names): ``DISTILL.<LOSS_NAME>.IN_FEATURES``, or
    ``DISTILL.FEATURE.IN_FEATURES`` when that is empty."""
    key = f"DISTILL.{loss_name.upper()}.IN_FEATURES"
    names = list(cfg.DISTILL[loss_name.upper()].IN_FEATURES)
    if names:
        return key, names
    return "DISTILL.FEATURE.IN_FEATURES", list(cfg.DISTILL.FEATURE.IN_FEATURES)


def feature_levels(cfg, student, teacher, loss_name: str) -> FeatureLevels:
    """The levels of loss ``loss_name`` (:func:`level_names`) checked against both backbones
    (names and strides), sorted fine to coarse."""
    s_shapes = student.backbone.output_shape()
    t_shapes = teacher.backbone.output_shape()
    key, names = level_names(cfg, loss_name)
    if not names:
        raise ValueError(f"{key} is empty")
    for name in names:
        for side, shapes in (("student", s_shapes), ("teacher", t_shapes)):
            if name not in shapes:
                raise KeyError(
                    f"{key} has {name!r}, which the {side} backbone does not output "
                    f"(it has {sorted(shapes)})"
                )
        if s_shapes[name].stride != t_shapes[name].stride:
            raise ValueError(
                f"Feature {name!r} has stride {s_shapes[name].stride} in the student but "
                f"{t_shapes[name].stride} in the teacher"
            )
    names.sort(key=lambda n: s_shapes[n].stride)
    return FeatureLevels(
        names,
        {n: s_shapes[n].channels for n in names},
        {n: t_shapes[n].channels for n in names},
        {n: s_shapes[n].stride for n in names},
    )


class FeatureDistiller(Distiller):
    """Base of the distillers on FPN levels: ``from_config`` gives ``levels`` (its own
    ``DISTILL.<NAME>.IN_FEATURES``, see :func:`feature_levels`); subclasses add their keys with
    ``{**super().from_config(cfg, student, teacher), ...}``."""

    def __init__(self, levels: FeatureLevels):
        super().__init__()
        self.levels = levels

    @property
    def in_features(self) -> Tuple[str, ...]:
        return tuple(self.levels.names)

    def valid_mask(self, ctx, name: str):
        """(N, H, W) bool cells of level ``name`` that cover image content, or None when all do
        (``DistillContext.valid_mask``): what the feature losses compare."""
        return ctx.valid_mask(name, self.levels.strides[name])

    @classmethod
    def from_config(cls, cfg, student, teacher):
        return {"levels": feature_levels(cfg, student, teacher, cls.loss_name)}
