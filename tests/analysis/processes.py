"""Helpers of the tests that kill a process and watch what becomes of its children."""

from __future__ import annotations

import time
from pathlib import Path


def wait_for_pid(path: Path, seconds: float = 60.0) -> int:
    """The process id a child writes to ``path`` once it runs (waits up to ``seconds``)."""
    for _ in range(int(seconds * 10)):
        if path.exists() and path.read_text():
            break
        time.sleep(0.1)
    return int(path.read_text())


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, ended but not reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def ends_within(pid: int, seconds: float) -> bool:
    """Whether process ``pid`` ends within ``seconds``."""
    for _ in range(int(seconds * 10)):
        if not alive(pid):
            return True
        time.sleep(0.1)
    return not alive(pid)
