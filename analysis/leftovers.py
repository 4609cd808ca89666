"""Temporary files and folders that a killed process leaves in a results folder.

A step writes every result through a temporary name (:func:`analysis.io.atomic_path`) and
keeps an aggregate it reads several times in a temporary folder
(:func:`analysis.store.tables.materialised`, the clean step's staged tables); both go
when the block ends, but not when the process is killed (out of memory, a cancelled job):
a killed 10-million-client run left its steps' client tables behind, and nothing ever
removed them. Their names carry the id of the process that made them (:func:`tagged`),
and a later run of the step removes those whose process is gone (:func:`sweep`).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

#: ``.<what>.pid<process id>.<random>[.tmp]``: the names :func:`tagged` starts
LEFTOVER = re.compile(r"^\..+\.pid(\d+)\.[A-Za-z0-9_]+(?:\.tmp)?$")


def tagged(what: str) -> str:
    """The prefix of a temporary name for ``what``, carrying this process's id (for
    ``tempfile``'s ``prefix``: it appends a random part)."""
    return f".{what}.pid{os.getpid()}."


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a process of another user counts as running; a
    zombie, which has ended but not yet been collected by its parent, does not: a killed
    step's worker is one until the fork server that started it collects it)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state is the field after the command name in parentheses
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def sweep(folder: str | Path) -> list[Path]:
    """Remove the temporary files and folders under ``folder`` whose process has ended.

    Only names :func:`tagged` made are touched, and only when the process id in them no
    longer runs (a live one may be writing them: another run on the same folder). A
    process id the system has given to a new process keeps its leftovers until a later
    sweep. Returns what was removed; a missing ``folder`` has nothing.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            m = LEFTOVER.match(name)
            if m is None or _alive(int(m.group(1))):
                continue
            path = Path(root) / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                dirs.remove(name)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed
