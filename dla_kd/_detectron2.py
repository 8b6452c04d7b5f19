"""Import guard: dla-kd runs on any Detectron2 build, but it must be importable."""

_HOW_TO_INSTALL = (
    "dla-kd needs Detectron2, which is not on the package index under its own name. "
    "Either run `bash scripts/setup.sh` (CPython 3.10: torch==2.3.1, torchvision==0.18.1 and the "
    "prebuilt wheel sal-detectron2==0.7.2), or build Detectron2 from source against your torch: "
    "`pip install 'git+https://github.com/facebookresearch/detectron2.git'` "
    "(see docs/install.md, 'With your own Detectron2 build')."
)


def require_detectron2() -> None:
    """Raise ImportError with install instructions if Detectron2 (or its compiled ops) is missing."""
    try:
        import detectron2  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{_HOW_TO_INSTALL} (import failed: {e})") from e
