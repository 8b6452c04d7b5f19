"""Getting the deployable model out of the toolkit."""
from .student import build_deployable_model, deployable_cfg, extract_student, is_distill_config

__all__ = ["build_deployable_model", "deployable_cfg", "extract_student", "is_distill_config"]
