"""The compiled models of earlier runs, kept under the results folder.

A :class:`CompileCache` is the store :func:`models.compiled.compile_model` loads a model's
compiled callbacks from and saves them to (see that module for what is kept and how the
key is made): one file per callback, ``<key>-<name>.nbc``, in ``<results>/.compiled``.
Files are written atomically; an entry that cannot be read is compiled again and
replaced. The folder is pruned to the entries used most recently when it passes
``max_bytes``. Deleting it is always safe: the next run compiles again.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from analysis.io import atomic_path

#: the folder's size cap: an entry is 0.1 to 1 MB, one run of the pipeline writes about 20
MAX_BYTES = 256 * 2**20
_NAME = re.compile(r"^[0-9a-f]{8,64}-[a-z_]{1,32}\.nbc$")


class CompileCache:
    """Compiled callbacks on disk (a :class:`models.compiled.CFuncStore`).

    Parameters
    ----------
    folder
        Where the entries are kept (created when the first one is saved).
    max_bytes
        Entries beyond this total are removed, least recently used first.
    """

    def __init__(self, folder: str | Path, max_bytes: int = MAX_BYTES) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes

    def path(self, key: str, name: str) -> Path:
        p = self.folder / f"{key}-{name}.nbc"
        if not _NAME.match(p.name):
            raise ValueError(f"not a compile-cache entry name: {p.name!r}")
        return p

    def load(self, key: str, name: str) -> bytes | None:
        """The entry's bytes, or None when there is none; a hit marks it used now."""
        p = self.path(key, name)
        try:
            payload = p.read_bytes()
            os.utime(p)  # least recently used goes first when pruning
        except OSError:
            return None
        return payload

    def save(self, key: str, name: str, payload: bytes) -> None:
        """Write the entry atomically, then prune the folder to ``max_bytes``.

        A folder that cannot be written (read-only results, a full disk) only costs
        the next run its compilation: nothing is raised."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.path(key, name)) as tmp:
                tmp.write_bytes(payload)
            self.prune()
        except OSError:
            pass

    def prune(self) -> list[Path]:
        """Remove the least recently used entries beyond ``max_bytes``; returns them."""
        entries = []
        for p in self.folder.glob("*.nbc"):
            try:
                st = p.stat()
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, p))
        entries.sort(reverse=True)
        total, removed = 0, []
        for _, size, p in entries:
            total += size
            if total > self.max_bytes:
                p.unlink(missing_ok=True)
                removed.append(p)
        return removed
