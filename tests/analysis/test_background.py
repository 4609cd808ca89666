import operator
import subprocess
import sys
import textwrap

import pytest

from analysis.background import ENV_VAR, background


def test_worker_returns_the_sequential_result() -> None:
    with background(divmod, 17, 5) as task:
        assert task.result() == divmod(17, 5)


def test_exception_of_the_function_is_raised_by_result() -> None:
    with background(divmod, 1, 0) as task, pytest.raises(ZeroDivisionError):
        task.result()


def test_inline_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "0")
    with background(divmod, 1, 0) as task, pytest.raises(ZeroDivisionError):
        task.result()


def test_worker_that_dies_is_reported() -> None:
    with background(sys.exit, 3) as task, pytest.raises(Exception) as err:
        task.result()
    # sys.exit raises SystemExit in the worker: not an Exception, so no result is written
    assert "exited with code 3" in str(err.value)


def test_a_script_without_main_guard_is_not_rerun(tmp_path) -> None:
    """multiprocessing's spawn re-imports the caller's script; the worker must not."""
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent("""
        from analysis.background import background
        with background(divmod, 7, 2) as task:
            print("result", task.result())
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["result", "(3,", "1)"]


def test_the_worker_reports_its_own_peak_memory_not_the_parents() -> None:
    parent = b"x" * (400 * 2**20)  # the parent holds 400 MiB when the worker starts
    with background(divmod, 17, 5) as small:
        small.result()
    with background(operator.mul, b"x", 150 * 2**20) as large:  # the worker builds 150 MiB
        assert len(large.result()) == 150 * 2**20
    assert small.peak_rss_mib is not None and small.peak_rss_mib < 200
    assert large.peak_rss_mib > 150
    del parent


def test_the_worker_yields_the_cores_to_the_step_waiting_for_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One OpenMP thread (spinning OpenMP threads take the cores of the caller's
    sampler), the caller's BLAS threads (so the numbers are the inline call's) and a
    lower scheduling priority than the caller."""
    import os

    from analysis.pipeline import BACKGROUND_NICE

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    with background(os.getenv, "OMP_NUM_THREADS") as omp, \
            background(os.getenv, "OPENBLAS_NUM_THREADS") as blas, \
            background(os.nice, 0) as nice:
        assert omp.result() == "1"
        assert blas.result() == "2"
        assert nice.result() == min(os.nice(0) + BACKGROUND_NICE, 19)


def test_a_task_ends_when_its_step_is_killed(tmp_path) -> None:
    import os
    import signal
    import time

    from tests.analysis.processes import ends_within, wait_for_pid

    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    pid_file = tmp_path / "task.pid"
    code = textwrap.dedent(f"""
        import time
        from analysis.background import background
        with background(time.sleep, 120) as task:
            open(r"{pid_file}", "w").write(str(task._proc.pid))
            time.sleep(120)
    """)
    step = subprocess.Popen([sys.executable, "-c", code])
    try:
        task = wait_for_pid(pid_file, 30.0)
        time.sleep(1.0)  # the task has set its death signal
        step.send_signal(signal.SIGKILL)
        step.wait(10)
        if not ends_within(task, 10.0):
            os.kill(task, signal.SIGKILL)
            pytest.fail("the background task outlived its killed step")
    finally:
        if step.poll() is None:
            step.kill()


@pytest.mark.parametrize("enabled", ["1", "0"])
def test_the_block_can_free_what_it_passed(monkeypatch: pytest.MonkeyPatch,
                                           enabled: str) -> None:
    # the uplift step drops the frame it handed the cross-check (hundreds of MiB at 10
    # million clients) before its model's fit: the task must not keep it alive
    import gc
    import weakref

    import numpy as np

    monkeypatch.setenv(ENV_VAR, enabled)
    data = np.arange(10.0)
    ref = weakref.ref(data)
    with background(np.sum, data) as task:
        del data
        gc.collect()
        assert ref() is None
        assert task.result() == 45.0
