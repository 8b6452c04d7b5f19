"""Access to Detectron2's current ``EventStorage`` from code that may run outside a trainer."""
from typing import Optional

from detectron2.utils.events import EventStorage, get_event_storage


def current_storage() -> Optional[EventStorage]:
    """The trainer's event storage, or None outside a training loop (tests, ``--eval-only``)."""
    try:
        return get_event_storage()
    except AssertionError:
        return None


def current_iter(default=0):
    """The current training iteration, or ``default`` outside a training loop."""
    storage = current_storage()
    return storage.iter if storage is not None else default
