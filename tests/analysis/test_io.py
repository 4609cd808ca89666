import os
import stat

import pytest

from analysis.io import atomic_path, write_json


def test_atomic_write_leaves_the_earlier_file_when_the_writer_fails(tmp_path):
    dest = tmp_path / "summary.json"
    write_json({"run": 1}, dest)
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text('{"run": 2, "half')
        raise RuntimeError("crash mid-write")
    assert dest.read_text() == '{\n  "run": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_outputs_get_the_permissions_of_a_plain_open_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        out = write_json({}, tmp_path / "a.json")
        plain = tmp_path / "b.json"
        plain.write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
