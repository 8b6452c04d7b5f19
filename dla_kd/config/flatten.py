"""A config as flat ``{"MODEL.WEIGHTS": value, ...}`` pairs (comparing configs key by key)."""
import os
from typing import Dict, Iterator, Tuple


def flatten_config(node, prefix: str = "") -> Iterator[Tuple[str, object]]:
    """``(dotted key, leaf value)`` of every leaf of ``node`` (a ``CfgNode`` or a plain nested dict,
    e.g. a loaded ``config.yaml``), depth first; ``prefix`` is put before every key."""
    for key, value in node.items():
        if isinstance(value, dict):
            yield from flatten_config(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def comparable_values(node) -> Dict:
    """``{"MODEL.WEIGHTS": value, ...}`` of every leaf, made comparable between a ``CfgNode`` and
    its dumped ``config.yaml``: tuples as lists, existing file paths as real paths."""
    return {key: _comparable(value) for key, value in flatten_config(node)}


def _comparable(value):
    if isinstance(value, (tuple, list)):
        return [_comparable(v) for v in value]
    if isinstance(value, str) and value and os.path.isfile(value):
        return os.path.realpath(value)
    return value
