"""A job for runtime.parallel's signal tests: steps until asked to stop, then saves after its current step."""
from __future__ import annotations

import signal
import time
from pathlib import Path


def step_until_stopped(saved: str, step_seconds: float) -> None:
    """Steps of ``step_seconds`` until SIGINT or SIGTERM; then finishes the step and writes ``saved``."""
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    while not stop:
        time.sleep(step_seconds)
    Path(saved).write_text(str(stop[0]))
