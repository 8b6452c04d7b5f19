"""A config as flat ``{"MODEL.WEIGHTS": value, ...}`` pairs (comparing configs key by key)."""
from typing import Iterator, Tuple


def flatten_config(node, prefix: str = "") -> Iterator[Tuple[str, object]]:
    """``(dotted key, leaf value)`` of every leaf of ``node`` (a ``CfgNode`` or a plain nested dict,
    e.g. a loaded ``config.yaml``), depth first; ``prefix`` is put before every key."""
    for key, value in node.items():
        if isinstance(value, dict):
            yield from flatten_config(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
