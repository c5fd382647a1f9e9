"""The DefFiller training loop; it lives in :mod:`training.trainer` (``from trainer import Trainer`` still works)."""
from training.trainer import Trainer

__all__ = ["Trainer"]
