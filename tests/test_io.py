"""raygen.io: atomic writes."""
from __future__ import annotations

import os
import stat

import pytest

from raygen.io import atomic_path, read_json, write_json


def test_atomic_write_gets_the_mode_of_a_plain_file(tmp_path):
    """mkstemp's temporary file is owner-only; the renamed result must have the umask's mode, as open() gives."""
    old = os.umask(0o027)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    assert read_json(tmp_path / "a.json") == {"x": 1}
    mode = stat.S_IMODE((tmp_path / "a.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o640


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    (tmp_path / "keep.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "keep.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer died")
    assert (tmp_path / "keep.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]
