from __future__ import annotations

import os
from pathlib import Path

import pytest

from analysis.compile_cache import CompileCache

KEY = "0123456789abcdef0123"


def test_round_trip_and_miss(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path / "c")
    assert cache.load(KEY, "logp") is None
    cache.save(KEY, "logp", b"abc")
    assert cache.load(KEY, "logp") == b"abc"
    assert cache.load(KEY, "expand") is None
    assert [p.name for p in (tmp_path / "c").iterdir()] == [f"{KEY}-logp.nbc"]  # no temp


def test_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="entry name"):
        CompileCache(tmp_path).path("../x", "logp")


def test_prune_keeps_the_most_recently_used(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path)
    for i, key in enumerate(["a" * 20, "b" * 20, "c" * 20]):
        cache.save(key, "logp", b"x" * 100)
        os.utime(cache.path(key, "logp"), (1000 + i, 1000 + i))
    cache.load("a" * 20, "logp")  # used now: the newest
    cache.max_bytes = 250
    removed = cache.prune()
    assert [p.name for p in removed] == [f"{'b' * 20}-logp.nbc"]
    assert cache.load("a" * 20, "logp") and cache.load("c" * 20, "logp")


def test_unwritable_folder_is_not_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = CompileCache(blocker / "sub")  # a folder under a file cannot be made
    cache.save(KEY, "logp", b"abc")
    assert cache.load(KEY, "logp") is None
