"""Registered distillation losses (importing this package registers them)."""
from . import feature, region, reviewkd, roi  # noqa: F401
