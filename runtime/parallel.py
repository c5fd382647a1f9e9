"""Independent jobs side by side in worker processes (the study's detector runs, generation seeds and
training stages).

On a CPU a small network trains faster as several one-thread processes than as one process with several
threads, so ``run_jobs`` gives each worker ``threads_each`` torch threads. Workers are spawned (not forked,
which is unsafe with torch's thread pools and CUDA), are not daemons (so a job may start processes of its
own, such as data-loader workers) and leave as soon as their parent process is gone, so a killed command
leaves no run going on behind it.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterator, Optional, Sequence

from runtime.errors import UserError

GRACE_SECONDS = 60.0  # after Ctrl-C, how long workers may take to save (a training run writes its checkpoint)


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Within: SIGTERM to this process is Ctrl-C (``KeyboardInterrupt``), so a command stopped by ``kill`` or a
    job scheduler waits for its workers to save, as after Ctrl-C (outside the main thread: nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _call(conn: Connection, fn: Callable[..., Any], args: tuple, parent: int, threads_each: Optional[int]) -> None:
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    if threads_each:
        import torch

        torch.set_num_threads(int(threads_each))
    try:
        conn.send((True, fn(*args), None))
    except BaseException as exc:  # sent back and raised in the parent, with the worker's traceback as its cause
        where = traceback.format_exc()
        try:
            conn.send((False, exc, where))
        except Exception:  # an exception that does not pickle
            conn.send((False, RuntimeError(f"{type(exc).__name__}: {exc}"), where))
    finally:
        conn.close()


class WorkerTraceback(Exception):
    """The traceback of an exception raised in a worker process (the cause of the one raised here)."""


def threads_per_job(threads: int, jobs: int) -> int:
    """Torch threads for each of ``jobs`` workers: ``threads`` when set, else the machine's cores shared out."""
    if threads > 0:
        return threads
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def run_jobs(fn: Callable[..., Any], calls: Sequence[tuple], jobs: int, threads_each: Optional[int] = None,
             on_done: Optional[Callable[[int, Any], None]] = None) -> list[Any]:
    """``[fn(*args) for args in calls]``, with up to ``jobs`` calls at a time in worker processes.

    ``fn`` must be importable (a module-level function) and its arguments and result picklable. With
    ``jobs <= 1`` or a single call everything runs here, in order. ``on_done(index, result)`` is called as each
    call finishes. The first call to fail stops the others (their workers are terminated) and its exception is
    raised here, the worker's traceback as its cause; a worker that dies is a one-line :class:`UserError`.
    """
    results: list[Any] = [None] * len(calls)
    if jobs <= 1 or len(calls) <= 1:
        for i, args in enumerate(calls):
            results[i] = fn(*args)
            if on_done is not None:
                on_done(i, results[i])
        return results
    spawn = multiprocessing.get_context("spawn")
    waiting = list(range(len(calls)))
    running: dict[int, tuple[Any, Connection]] = {}
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                i = waiting.pop(0)
                receive, send = spawn.Pipe(duplex=False)
                worker = spawn.Process(target=_call, args=(send, fn, tuple(calls[i]), os.getpid(), threads_each),
                                       name=f"job-{i}")
                worker.start()
                send.close()  # the worker holds the only sending end: its death reads as end of file here
                running[i] = (worker, receive)
            ready = wait([conn for _, conn in running.values()], timeout=1.0)
            for i in [i for i, (_, conn) in running.items() if conn in ready]:
                worker, conn = running.pop(i)
                try:
                    ok, value, where = conn.recv()
                except EOFError:
                    worker.join()
                    raise UserError(f"a worker process died (exit code {worker.exitcode}; -9 is often the memory "
                                    "running out); rerun the same command to resume, with fewer jobs if memory ran "
                                    "out") from None
                worker.join()
                if not ok:
                    raise value from WorkerTraceback(where)
                results[i] = value
                if on_done is not None:
                    on_done(i, value)
    except KeyboardInterrupt:  # Ctrl-C reached the workers too: give them a moment to save and stop on their own
        # (a signal to this process alone reaches them when the grace is over: terminate() sends SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for worker, _ in running.values():
            worker.join(max(0.0, deadline - time.monotonic()))
        raise
    finally:  # a call failed, or the grace period is over: stop the others
        for worker, _ in running.values():
            if worker.is_alive():
                worker.terminate()
        for worker, _ in running.values():
            worker.join()
    return results
