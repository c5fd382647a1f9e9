"""runtime.parallel: calls side by side in spawned worker processes, in order, failures raised here."""
from __future__ import annotations

import os

import pytest

from runtime.parallel import run_jobs, threads_per_job


def test_calls_run_in_worker_processes_and_come_back_in_order():
    done = []
    results = run_jobs(os.getpid, [()] * 3, jobs=2, on_done=lambda i, r: done.append(i))
    assert len(results) == 3 and os.getpid() not in results
    assert sorted(done) == [0, 1, 2]
    assert run_jobs(abs, [(-3,), (4,), (-5,)], jobs=2) == [3, 4, 5]


def test_one_job_runs_here():
    assert run_jobs(os.getpid, [(), ()], jobs=1) == [os.getpid()] * 2


def test_a_failing_call_is_raised_here():
    with pytest.raises(ValueError, match="invalid literal"):
        run_jobs(int, [("1",), ("not a number",)], jobs=2)


def test_threads_are_shared_out_unless_set():
    assert threads_per_job(3, 2) == 3
    assert threads_per_job(0, 2) == max(1, (os.cpu_count() or 1) // 2)
    assert threads_per_job(0, 10_000) == 1


def test_a_job_may_start_processes_of_its_own():
    """Workers are not daemons: a job can run data-loader workers or jobs of its own."""
    nested = run_jobs(run_jobs, [(os.getpid, [(), ()], 2), (abs, [(-1,), (2,)], 2)], jobs=2)
    assert len(nested[0]) == 2 and os.getpid() not in nested[0] and nested[1] == [1, 2]


def test_a_worker_that_dies_is_an_error_here():
    with pytest.raises(RuntimeError, match=r"died \(exit code 3\)"):
        run_jobs(os._exit, [(3,), (3,)], jobs=2)
