"""Test-time budgets: the config keys that set the inference cost of a page, as named presets
and ``KEY VALUE`` overrides, applied to the *deployed* (plain) config.

========================================  =========================================  ============
key                                       effect                                     where
========================================  =========================================  ============
``MODEL.RPN.POST_NMS_TOPK_TEST``          proposals kept after the RPN's NMS         in the graph
``MODEL.ROI_HEADS.SCORE_THRESH_TEST``     detections below it dropped before NMS     in the graph
``TEST.DETECTIONS_PER_IMAGE``             top-k detections kept per page             in the graph
``INPUT.MIN_SIZE_TEST``/``MAX_SIZE_TEST`` size the page is resized to                caller (spec)
========================================  =========================================  ============

An export traces the first three into the graph as constants; the test size goes to
``export_info.json`` (``input.min_size_test``) and every predictor of the export resizes pages by
it. A preset caps the config's values (``fast`` never raises a smaller ``POST_NMS_TOPK_TEST``);
explicit ``KEY VALUE`` overrides of these keys then set them exactly. They are applied after
:func:`.student.deployable_cfg`, so they also reach the RPN/ROI settings a SimKD student copies
from its teacher's config.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence, Tuple

from detectron2.config import CfgNode

# key -> how a preset value combines with the config's (a cap for counts and sizes, a floor for the threshold)
BUDGET_KEYS: Dict[str, Callable] = {
    "MODEL.RPN.POST_NMS_TOPK_TEST": min,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": max,
    "TEST.DETECTIONS_PER_IMAGE": min,
    "INPUT.MIN_SIZE_TEST": min,
    "INPUT.MAX_SIZE_TEST": min,
}
IN_GRAPH_KEYS = ("MODEL.RPN.POST_NMS_TOPK_TEST", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "TEST.DETECTIONS_PER_IMAGE")

# name -> {key: value}; "accurate" keeps the config's own values
BUDGETS: Dict[str, Dict[str, float]] = {
    "accurate": {},
    "fast": {"MODEL.RPN.POST_NMS_TOPK_TEST": 300, "TEST.DETECTIONS_PER_IMAGE": 50},
}


def config_value(cfg: CfgNode, key: str):
    """The value of the dotted ``key`` (e.g. ``TEST.DETECTIONS_PER_IMAGE``) in ``cfg``."""
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def split_budget_overrides(opts: Sequence[str]) -> Tuple[List[str], List[str]]:
    """``["KEY", "VALUE", ...]`` -> (the pairs of budget keys, the other pairs)."""
    pairs = list(zip(opts[0::2], opts[1::2]))
    budget = [x for k, v in pairs if k in BUDGET_KEYS for x in (k, v)]
    other = [x for k, v in pairs if k not in BUDGET_KEYS for x in (k, v)]
    return budget, other + list(opts[len(pairs) * 2:])


@dataclass
class Budget:
    """A preset of :data:`BUDGETS` plus explicit ``KEY VALUE`` overrides of :data:`BUDGET_KEYS`."""

    preset: str = "accurate"
    overrides: List[str] = field(default_factory=list)

    def __post_init__(self):
        if self.preset not in BUDGETS:
            raise ValueError(f"Unknown budget {self.preset!r}; choose from {sorted(BUDGETS)}")
        unknown = [k for k in self.overrides[0::2] if k not in BUDGET_KEYS]
        if unknown or len(self.overrides) % 2:
            raise ValueError(f"Budget overrides must be KEY VALUE pairs of {sorted(BUDGET_KEYS)}, got {self.overrides}")

    def apply(self, cfg: CfgNode) -> CfgNode:
        """A frozen copy of the plain config ``cfg`` with the preset's caps, then the overrides."""
        preset = [x for k, v in BUDGETS[self.preset].items() for x in (k, BUDGET_KEYS[k](config_value(cfg, k), v))]
        cfg = cfg.clone()
        cfg.defrost()
        cfg.merge_from_list(preset + list(self.overrides))
        cfg.freeze()
        return cfg

    def describe(self, cfg: CfgNode) -> Dict:
        """What ``export_info.json`` records: the preset, the overrides and the resulting values
        of the budgeted config ``cfg``, split by where they act."""
        return {
            "preset": self.preset,
            "overrides": dict(zip(self.overrides[0::2], self.overrides[1::2])),
            "in_graph": {k: config_value(cfg, k) for k in IN_GRAPH_KEYS},
            "caller_side": {k: config_value(cfg, k) for k in BUDGET_KEYS if k not in IN_GRAPH_KEYS},
        }
