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


def test_a_failing_call_is_raised_here_with_the_workers_traceback():
    with pytest.raises(ValueError, match="invalid literal") as err:
        run_jobs(int, [("1",), ("not a number",)], jobs=2)
    assert "Traceback" in str(err.value.__cause__) and "ValueError" in str(err.value.__cause__)


def test_threads_are_shared_out_unless_set():
    assert threads_per_job(3, 2) == 3
    assert threads_per_job(0, 2) == max(1, (os.cpu_count() or 1) // 2)
    assert threads_per_job(0, 10_000) == 1


def test_a_job_may_start_processes_of_its_own():
    """Workers are not daemons: a job can run data-loader workers or jobs of its own."""
    nested = run_jobs(run_jobs, [(os.getpid, [(), ()], 2), (abs, [(-1,), (2,)], 2)], jobs=2)
    assert len(nested[0]) == 2 and os.getpid() not in nested[0] and nested[1] == [1, 2]


def test_a_worker_that_dies_is_a_one_line_error_here():
    from runtime.errors import UserError

    with pytest.raises(UserError, match=r"died \(exit code 3; .*rerun the same command to resume") as err:
        run_jobs(os._exit, [(3,), (3,)], jobs=2)
    assert "\n" not in str(err.value)


def test_ctrl_c_stops_the_workers_and_the_command(tmp_path):
    """Ctrl-C signals the whole process group: the workers stop on their own and the command exits, no worker left."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from parallel_helpers import as_from_a_shell, wait_for_files

    marks = [tmp_path / "job0", tmp_path / "job1"]
    code = ("import sys\nsys.path.insert(0, 'tests')\nfrom runtime.parallel import run_jobs\n"
            "from parallel_helpers import sleep_after_marking\n"
            f"run_jobs(sleep_after_marking, [({str(marks[0])!r}, 60), ({str(marks[1])!r}, 60)], 2)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                            start_new_session=True, stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_shell)
    wait_for_files(marks)  # the workers are sleeping
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert time.monotonic() - start < 20  # not the 60 s of the calls
    for _ in range(50):  # multiprocessing's resource tracker leaves a moment after the command
        leftover = subprocess.run(["pgrep", "-a", "-g", str(proc.pid)], capture_output=True, text=True).stdout
        if not leftover:
            break
        time.sleep(0.1)
    assert leftover == ""


def _stopped_job_run(tmp_path, signal_group: bool) -> tuple[int, str, list[str], float]:
    """A command of two jobs that save after their current 3 s step, stopped by SIGTERM to its process group or to
    itself alone (with a grace of 2 s); returns its exit code, stderr, what the jobs saved and the seconds taken."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from parallel_helpers import as_from_a_shell

    saved = [tmp_path / "job0", tmp_path / "job1"]
    code = ("import sys\nsys.path.insert(0, 'tests')\nimport runtime.parallel as P\nP.GRACE_SECONDS = 2.0\n"
            "from parallel_helpers import step_until_stopped\nwith P.sigterm_as_ctrl_c():\n"
            f"    P.run_jobs(step_until_stopped, [({str(saved[0])!r}, 3.0), ({str(saved[1])!r}, 3.0)], 2)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                            start_new_session=True, stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_shell)
    from parallel_helpers import wait_for_files

    wait_for_files([Path(f"{p}.started") for p in saved])  # the workers are stepping
    start = time.monotonic()
    if signal_group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    for _ in range(50):
        if not subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True).stdout:
            break
        time.sleep(0.1)
    return proc.returncode, err, [p.read_text() if p.exists() else "" for p in saved], time.monotonic() - start


def test_sigterm_to_the_group_lets_the_workers_finish_their_step_and_save(tmp_path):
    """Without the handler the command dies at once and its workers follow it before their step is over."""
    import signal

    code, err, saved, seconds = _stopped_job_run(tmp_path, signal_group=True)
    assert code != 0 and "KeyboardInterrupt" in err
    assert saved == [str(int(signal.SIGTERM))] * 2 and seconds < 15


def test_sigterm_to_the_command_alone_reaches_the_workers_after_the_grace(tmp_path):
    import signal

    code, err, saved, seconds = _stopped_job_run(tmp_path, signal_group=False)
    assert code != 0 and "KeyboardInterrupt" in err
    assert saved == [str(int(signal.SIGTERM))] * 2 and 2 <= seconds < 15


def test_sigterm_as_ctrl_c_is_undone_on_leaving():
    import signal

    before = signal.getsignal(signal.SIGTERM)
    from runtime.parallel import sigterm_as_ctrl_c

    with pytest.raises(KeyboardInterrupt), sigterm_as_ctrl_c():
        os.kill(os.getpid(), signal.SIGTERM)
        import time
        time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) is before
