"""Atomic writes and content hashes for pipeline outputs.

Every output is written to a temporary file in the destination folder and renamed into
place, so a crash never leaves a half-written result and earlier results stay intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.leftovers import tagged


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` on success.

    Examples
    --------
    >>> with atomic_path("out.json") as tmp:  # doctest: +SKIP
    ...     tmp.write_text("{}")
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # the name carries this process's id: a killed run's file is removed by the next
    # (analysis.leftovers)
    fd, tmp_name = tempfile.mkstemp(prefix=tagged(dest.name), suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; give results the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(obj: Any, dest: str | Path) -> Path:
    """Write ``obj`` as UTF-8 JSON atomically (NaN becomes null)."""
    text = json.dumps(_jsonable(obj), ensure_ascii=False, indent=2, sort_keys=False)
    with atomic_path(dest) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return Path(dest)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_parquet(df: pd.DataFrame, dest: str | Path) -> Path:
    """Write a DataFrame to parquet atomically."""
    with atomic_path(dest) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(dest)


def write_text(text: str, dest: str | Path) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def save_figure(fig: Any, dest: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Path(dest)


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def digest_of(obj: Any) -> str:
    """SHA-256 of a JSON-serialisable object (keys sorted)."""
    blob = json.dumps(_jsonable(obj), sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        f = float(obj)
        return None if f != f or f in (float("inf"), float("-inf")) else f
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj
