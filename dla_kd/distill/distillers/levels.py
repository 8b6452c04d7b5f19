"""Which feature levels a feature distiller compares, and their widths on both sides."""
from typing import Dict, List, NamedTuple


class FeatureLevels(NamedTuple):
    """names: FPN levels distilled (fine to coarse); s_channels / t_channels / strides per name."""

    names: List[str]
    s_channels: Dict[str, int]
    t_channels: Dict[str, int]
    strides: Dict[str, int]


def feature_levels(cfg, student, teacher) -> FeatureLevels:
    """``DISTILL.FEATURE.IN_FEATURES`` checked against both backbones (names and strides)."""
    s_shapes = student.backbone.output_shape()
    t_shapes = teacher.backbone.output_shape()
    names = list(cfg.DISTILL.FEATURE.IN_FEATURES)
    if not names:
        raise ValueError("DISTILL.FEATURE.IN_FEATURES is empty")
    for name in names:
        for side, shapes in (("student", s_shapes), ("teacher", t_shapes)):
            if name not in shapes:
                raise KeyError(
                    f"DISTILL.FEATURE.IN_FEATURES has {name!r}, which the {side} backbone does not output "
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
