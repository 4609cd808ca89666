import os
import subprocess
import sys

from analysis.io import atomic_path
from analysis.leftovers import sweep, tagged
from tests.conftest import ended_process_id


def test_an_ended_process_not_yet_collected_counts_as_ended():
    """A killed worker is a zombie until its parent collects it (the CI run of the
    pipeline test found one): its leftovers are removed all the same."""
    import time

    from analysis.leftovers import _alive

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(200):  # ended, not waited for: a zombie
            state = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                break
            time.sleep(0.05)
        assert state == "Z" and not _alive(p.pid)
    finally:
        p.wait()
    assert _alive(os.getpid()) and _alive(os.getppid())


def test_sweep_removes_what_ended_processes_left_and_nothing_else(tmp_path):
    dead = ended_process_id()
    (tmp_path / "model").mkdir()
    gone = [tmp_path / f".materialised.pid{dead}.k2j4_x9q", tmp_path / "model" /
            f".model.joblib.pid{dead}.a1b2c3d4.tmp"]
    gone[0].mkdir()
    (gone[0] / "result.parquet").write_bytes(b"x" * 100)
    gone[1].write_bytes(b"partial")
    kept = [tmp_path / f"{tagged('materialised')}live0001",  # this process: still writing
            tmp_path / f".staged.pid{os.getppid()}.abcd1234",  # the parent: alive
            tmp_path / "summary.json", tmp_path / ".materialised-abc123",  # not tagged
            tmp_path / f"materialised.pid{dead}.abcd1234"]  # not hidden: not ours
    for k in kept:
        k.mkdir() if "materialised" in k.name or "staged" in k.name else k.write_text("{}")
    removed = sweep(tmp_path)
    assert sorted(removed) == sorted(gone)
    assert not any(p.exists() for p in gone) and all(k.exists() for k in kept)
    assert sweep(tmp_path / "absent") == []


def test_atomic_writes_carry_the_process_id_and_leave_nothing_on_failure(tmp_path):
    with atomic_path(tmp_path / "out.json") as tmp:
        assert tmp.name.startswith(f".out.json.pid{os.getpid()}.") and tmp.suffix == ".tmp"
        tmp.write_text("{}")
    assert (tmp_path / "out.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
