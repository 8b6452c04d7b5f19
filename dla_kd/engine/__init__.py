"""Training and evaluation entry points."""
from .setup import load_config, setup_run
from .trainer import Trainer

__all__ = ["Trainer", "load_config", "setup_run"]
