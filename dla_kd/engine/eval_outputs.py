"""Where ``--eval-only`` writes its results: never over another checkpoint's evaluation.

A training run writes ``<OUTPUT_DIR>/eval_<dataset>.json`` (its final evaluation) and
``inference/<dataset>/``. ``--eval-only`` into a folder that holds a training run (a checkpoint,
``last_checkpoint``) writes ``eval_<dataset>__<weights-stem>.json`` and
``inference/<dataset>__<weights-stem>/`` instead, e.g. ``eval_doclaynet_val__model_0009999.json``;
into a folder without a run (the usual evaluation folder) it writes ``eval_<dataset>.json`` when
that file is free or holds an evaluation of the same weights (same sha256), else the named form.
A named file that holds another file's evaluation (two checkpoints called ``model_final.pth`` of
different runs) gets the first 8 hex digits of the weights' sha256 appended. Every evaluation
records ``weights`` (the path) and, for ``--eval-only``, ``weights_sha256``.
"""
import json
import os
from typing import Optional

from ..utils.files import file_sha256
from .run_record import has_checkpoint_files


def weights_stem(weights: str) -> str:
    """``path/model_0004999.pth`` -> ``model_0004999``."""
    return os.path.splitext(os.path.basename(weights))[0] or "weights"


def _recorded_sha(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return json.load(f).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        return None


def eval_suffix(output_dir: str, dataset: str, weights: str, sha256: str) -> str:
    """``""`` (write ``eval_<dataset>.json``) or ``"__<stem>"`` / ``"__<stem>-<sha8>"``: the
    suffix of the result file and inference folder of an ``--eval-only`` of ``weights``."""
    plain = os.path.join(output_dir, f"eval_{dataset}.json")
    if not has_checkpoint_files(output_dir) and (not os.path.exists(plain) or _recorded_sha(plain) == sha256):
        return ""
    suffix = f"__{weights_stem(weights)}"
    named = os.path.join(output_dir, f"eval_{dataset}{suffix}.json")
    if os.path.exists(named) and _recorded_sha(named) != sha256:
        suffix += f"-{sha256[:8]}"
    return suffix


def weights_fingerprint(weights: str) -> str:
    """sha256 of a local weights file ("" when it is not a local file, e.g. a URL)."""
    return file_sha256(weights) if os.path.isfile(weights) else ""
