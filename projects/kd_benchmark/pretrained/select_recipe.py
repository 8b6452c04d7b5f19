#!/usr/bin/env python
"""The selection rule of ``protocol.md``, applied to the selection runs' validation results only.

    # after the five candidates (seed 42, 1x) are published under <runs>:
    python projects/kd_benchmark/pretrained/select_recipe.py terms --runs <runs>
    # -> selection.json (F*, R*) and configs/recipes/combination.yaml (F* + R*)
    # after the combination's run is published there too:
    python projects/kd_benchmark/pretrained/select_recipe.py recommended --runs <runs>
    # -> selection.json gains the recommended recipe (best of F*, R*, combination)

``<runs>/<recipe>/seed42/eval_synthetic_doclaynet_val.json`` are the inputs (written by
kd_report's ``--publish-runs``); test-split files are never read here.
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the kd_benchmark package
from kd_benchmark.curves import last_logged  # noqa: E402

from dla_kd.utils.files import atomic_write_json, atomic_write_text  # noqa: E402

FEATURE = ["mgd_balanced", "defeat", "pkd"]
RESPONSE = ["crosskd", "logit_kd"]
SEED = 42
DATASET = "synthetic_doclaynet_val"
COMBINATION = "combination"


def val_ap(runs: str, recipe: str, seed: int = SEED, dataset: str = DATASET) -> float:
    """bbox AP of ``recipe``'s run of ``seed`` on the validation pages."""
    path = os.path.join(runs, recipe, f"seed{seed}", f"eval_{dataset}.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: the selection run {recipe} (seed {seed}) is not published yet")
    with open(path) as f:
        return float(json.load(f)["results"]["bbox"]["AP"])


def best(scores: Dict[str, float], order: Sequence[str]) -> str:
    """The recipe of best score; ties go to the first in ``order``."""
    return max(order, key=lambda name: (scores[name], -order.index(name)))


def recipe_losses(recipe_file: str) -> List[str]:
    from dla_kd.config import load_config

    return list(load_config(recipe_file, []).DISTILL.LOSSES)


def combination_yaml(feature: str, response: str, runs: str, recipes_dir: str) -> str:
    """The combination's config: F*'s file as base (its weights as published) plus R*'s losses;
    a balanced F* gets the weights its seed-42 run ended with, fixed, and balancing off."""
    f_losses = recipe_losses(os.path.join(recipes_dir, f"{feature}.yaml"))
    r_losses = recipe_losses(os.path.join(recipes_dir, f"{response}.yaml"))
    lines = [
        f"# Selection (protocol.md): the combination of the best feature loss ({feature}) and the best",
        f"# response loss ({response}) on the validation pages, seed {SEED}. Written by select_recipe.py.",
        f'_BASE_: "{feature}.yaml"',
        "DISTILL:",
        f"  LOSSES: {json.dumps(f_losses + r_losses)}",
    ]
    logged = last_logged(os.path.join(runs, feature, f"seed{SEED}"), "kd_weight/")
    if logged:
        lines += ["  BALANCE:", "    ENABLED: False"]
        for loss, weight in sorted(logged.items()):
            lines += [f"  {loss.upper()}:", f"    WEIGHT: {weight!r}"]
    return "\n".join(lines) + "\n"


def read_selection(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["terms", "recommended"])
    parser.add_argument("--runs", required=True, help="published selection runs: <runs>/<recipe>/seed42/")
    parser.add_argument("--recipes", default=os.path.join(HERE, "configs", "recipes"))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "selection.json"))
    parser.add_argument("--combination", default="",
                        help="where the combination's config goes (default: <recipes>/combination.yaml)")
    args = parser.parse_args(argv)
    selection = read_selection(args.out)
    if args.step == "terms":
        scores = {r: val_ap(args.runs, r) for r in FEATURE + RESPONSE}
        feature, response = best(scores, FEATURE), best(scores, RESPONSE)
        atomic_write_text(args.combination or os.path.join(args.recipes, f"{COMBINATION}.yaml"),
                          combination_yaml(feature, response, args.runs, args.recipes))
        selection = {"rule": "protocol.md, Selection", "seed": SEED, "dataset": DATASET,
                     "val_bbox_AP": scores, "feature": feature, "response": response}
    else:
        if "feature" not in selection:
            parser.error(f"{args.out} has no terms yet: run the 'terms' step first")
        finalists = [selection["feature"], selection["response"], COMBINATION]
        scores = {r: val_ap(args.runs, r) for r in finalists}
        selection["val_bbox_AP"].update(scores)
        selection["recommended"] = best(scores, finalists)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    atomic_write_json(args.out, selection, indent=1)
    print(json.dumps(selection, indent=1))


if __name__ == "__main__":
    main()
