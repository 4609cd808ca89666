"""Run a CPU-bound function on the second core while the step goes on.

Compiling an MCMC model keeps one core busy for tens of seconds; independent work of the
same step (scikit-learn cross-checks) can run beside it in another process. The result
is that of the sequential call: the function runs once, with the same arguments, in a
fresh interpreter started as ``python -m analysis.background`` (no state inherited from
the parent's threads, and unlike ``multiprocessing``'s spawn, the caller's script is not
re-imported, so scripts without an ``if __name__ == "__main__"`` guard work).

Usage::

    with background(observational_check, frame, seed) as task:
        ...  # the long computation here
        result = task.result()
"""

from __future__ import annotations

import importlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: set to 0 to run every background task inline (debugging, one-core machines)
ENV_VAR = "SHOPBAYES_BACKGROUND"
_ROOT = Path(__file__).resolve().parents[1]


def die_with_parent() -> None:
    """Have the kernel end this process (SIGTERM) when the process that started it ends,
    however it ends: a step killed with SIGKILL (or by the out-of-memory killer) leaves
    no background task computing for nobody (Linux ``prctl(PR_SET_PDEATHSIG)``; nothing
    elsewhere). For a background task, whose parent is its step's process; a step's
    worker, whose parent is the fork server, watches the run instead (:func:`end_with`)."""
    import ctypes
    import ctypes.util
    import signal

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent ended before the call took effect
        os.kill(os.getpid(), signal.SIGTERM)


def end_with(pid: int) -> None:
    """End this process (SIGTERM) when process ``pid`` ends: a daemon thread waits on a
    Linux pidfd of ``pid`` (``os.pidfd_open``; nothing where there is none). A step's
    worker is a fork of the pipeline's fork server, which lives as long as any of its
    workers does (each holds the server's liveness pipe), so the death of the server's
    parent reaches neither: the worker watches the run itself."""
    import select
    import signal
    import threading

    if not hasattr(os, "pidfd_open"):
        return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # the run ended before this worker started
        os.kill(os.getpid(), signal.SIGTERM)
        return
    except OSError:
        return

    def watch() -> None:
        select.select([fd], [], [])  # readable when the process ends
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="shopbayes-run-watch", daemon=True).start()


def _enabled() -> bool:
    return os.environ.get(ENV_VAR, "1") != "0" and (os.cpu_count() or 1) >= 2


class Task:
    """A call running in a worker process (or already run inline)."""

    def __init__(self, proc: subprocess.Popen | None, folder: Path | None,
                 value: Any = None, error: BaseException | None = None) -> None:
        self._proc, self._folder = proc, folder
        self._value, self._error, self._done = value, error, proc is None
        #: the worker's peak resident memory (MiB; ``None`` inline or when unknown)
        self.peak_rss_mib: float | None = None

    def result(self) -> Any:
        """Wait for the call and return its value; re-raise its exception.

        Raises
        ------
        RuntimeError
            The worker process died without a result (its stderr is in the message).
        """
        if not self._done:
            assert self._proc is not None and self._folder is not None
            self._proc.wait()
            out = self._folder / "result.pkl"
            if out.exists():
                with out.open("rb") as f:
                    ok, payload, self.peak_rss_mib = pickle.load(f)
                self._value, self._error = (payload, None) if ok else (None, payload)
            else:
                err = (self._folder / "stderr.txt").read_text(errors="replace")[-2000:]
                self._error = RuntimeError(
                    f"background worker exited with code {self._proc.returncode} and no "
                    f"result:\n{err}")
            self._done = True
        if self._error is not None:
            raise self._error
        return self._value


@contextmanager
def background(fn: Callable[..., Any], *args: Any) -> Iterator[Task]:
    """Start ``fn(*args)`` in a worker process; yields a :class:`Task`.

    ``fn`` must be a module-level function and its arguments and result picklable.
    With one core, or ``SHOPBAYES_BACKGROUND=0``, ``fn`` runs inline before the block.
    Leaving the block stops a worker whose result was not asked for (the block failed),
    so no process outlives the step.
    """
    if not _enabled():
        try:
            task = Task(None, None, value=fn(*args))
        except Exception as exc:  # handed to the caller through result()
            task = Task(None, None, error=exc)
        del args
        yield task
        return
    folder = Path(tempfile.mkdtemp(prefix="shopbayes-bg-"))
    try:
        with (folder / "task.pkl").open("wb") as f:
            pickle.dump((fn.__module__, fn.__qualname__, args), f,
                        protocol=pickle.HIGHEST_PROTOCOL)
        # pickled: the block may free what it passed (this frame lives as long as it)
        del args
        from analysis.pipeline import worker_env

        # one OpenMP thread, the caller's BLAS threads: the pipeline's workers' policy
        # (see :data:`analysis.pipeline.WORKER_ENV`: spinning OpenMP threads beside other
        # busy threads tripled a step's time), so the task does not spin against the
        # caller's sampler, and its numbers are the inline call's
        env = {**os.environ, **worker_env(),
               "PYTHONPATH": os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")])}
        with (folder / "stderr.txt").open("wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "analysis.background", str(folder)],
                                    stdout=subprocess.DEVNULL, stderr=err, env=env)
        task = Task(proc, folder)
        try:
            yield task
        finally:
            if proc.poll() is None and not task._done:
                proc.kill()
            proc.wait()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _worker(folder: Path) -> None:
    from analysis.pipeline import BACKGROUND_NICE

    # below the step that waits for it: the step's sampler keeps the cores it needs and
    # the task takes what the sampler leaves idle (all of a core while a model compiles)
    die_with_parent()
    os.nice(BACKGROUND_NICE)
    with (folder / "task.pkl").open("rb") as f:
        module, name, args = pickle.load(f)
    try:
        fn = importlib.import_module(module)
        for part in name.split("."):
            fn = getattr(fn, part)
        payload: tuple[bool, Any] = (True, fn(*args))
    except Exception as exc:  # the parent re-raises it
        payload = (False, exc)
    tmp = folder / "result.pkl.tmp"
    with tmp.open("wb") as f:
        pickle.dump((*payload, peak_rss_mib()), f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(folder / "result.pkl")


def peak_rss_mib() -> float | None:
    """This process's peak resident memory (MiB) since it started its program, or since
    :func:`analysis.pipeline.reset_peak_rss`: Linux's ``VmHWM`` (``None`` elsewhere).
    ``getrusage`` would not do: after the parent's fork and exec it reports the parent's
    peak as the child's, and it cannot be reset."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
