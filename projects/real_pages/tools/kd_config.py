#!/usr/bin/env python
"""Write ``configs/kd_recommended_R_18_to_MNv3S.yaml``: the study's student distilled from the study's
teacher with the recipe the KD benchmark's protocol selected on its validation pages
(``projects/kd_benchmark/pretrained/results/selection.json``, key ``recommended``):

    .venv/bin/python projects/real_pages/tools/kd_config.py

Every DISTILL key of that recipe that differs from dla-kd's defaults is written out (the teacher
keys excepted: this study's teacher, its feature cache and sanity check), so the file stands alone;
``tests/test_real_pages.py`` checks its DISTILL section equals the recipe's.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(PROJECT))
BENCHMARK = os.path.join(REPO, "projects", "kd_benchmark", "pretrained")
OUT = os.path.join(PROJECT, "configs", "kd_recommended_R_18_to_MNv3S.yaml")
TEACHER_KEYS = {
    "CONFIG": "projects/real_pages/configs/teacher_R_18_FPN128.yaml",
    "WEIGHTS": "output/real_pages/teacher/model_final.pth",
}


def changed_distill_keys(recipe_cfg, default_cfg):
    """(dotted key under DISTILL, value) of every key the recipe sets to a non-default value."""
    from dla_kd.config.flatten import flatten_config

    defaults = dict(flatten_config(default_cfg.DISTILL))
    return [(k, v) for k, v in flatten_config(recipe_cfg.DISTILL)
            if not k.startswith("TEACHER.") and defaults.get(k) != v]


def render(recipe: str, keys) -> str:
    lines = [
        "# The study's student distilled from the study's teacher with the recipe the KD benchmark's",
        f"# protocol selected on its validation pages ({recipe}: projects/kd_benchmark/pretrained/results/",
        "# selection.json; its DISTILL keys written out by tools/kd_config.py, checked by the tests).",
        "# Same data, input size and schedule as the supervised student.",
        '_BASE_: "student_MNv3S.yaml"',
        "MODEL:",
        '  META_ARCHITECTURE: "DistillGeneralizedRCNN"',
        "DISTILL:",
    ]
    tree = {}
    for key, value in keys:
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value

    def emit(node, depth):
        for k, v in node.items():
            if isinstance(v, dict):
                lines.append("  " * depth + f"{k}:")
                emit(v, depth + 1)
            else:
                lines.append("  " * depth + f"{k}: {json.dumps(list(v) if isinstance(v, tuple) else v)}")

    emit(tree, 1)
    lines += ["  TEACHER:"] + [f'    {k}: "{v}"' for k, v in TEACHER_KEYS.items()] + [
        "    FEATURE_CACHE:", '      DIR: "output/real_pages/teacher_feature_cache"',
        "    SANITY_CHECK:", "      ENABLED: True", "      NUM_IMAGES: 20", "      MIN_AP: 5.0",
        'OUTPUT_DIR: "output/real_pages/kd_recommended/seed42"']
    return "\n".join(lines) + "\n"


def main() -> int:
    sys.path.insert(0, REPO)
    from dla_kd.config import get_dla_kd_cfg, load_config
    from dla_kd.utils.files import atomic_write_text

    with open(os.path.join(BENCHMARK, "results", "selection.json")) as f:
        recipe = json.load(f)["recommended"]
    recipe_cfg = load_config(os.path.join(BENCHMARK, "configs", "recipes", f"{recipe}.yaml"))
    atomic_write_text(OUT, render(recipe, changed_distill_keys(recipe_cfg, get_dla_kd_cfg())))
    print(f"{OUT}: {recipe}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
