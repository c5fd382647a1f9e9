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
    Path(f"{saved}.started").touch()
    while not stop:
        time.sleep(step_seconds)
    Path(saved).write_text(str(stop[0]))


def sleep_after_marking(marker: str, seconds: float) -> None:
    """Writes ``marker`` (the job has started), then sleeps ``seconds``."""
    Path(marker).touch()
    time.sleep(seconds)


def wait_for_files(paths: list[Path], timeout: float = 60.0) -> None:
    """Until every path exists (the jobs have started: a loaded machine spawns workers slowly)."""
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"jobs did not start within {timeout:g} s"
        time.sleep(0.1)


def as_from_a_shell() -> None:
    """``preexec_fn`` for a command under test: the default Ctrl-C and SIGTERM handling a shell gives it, whatever
    an earlier test in this process left ignored or blocked (both are inherited across exec)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
