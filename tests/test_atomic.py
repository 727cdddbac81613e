import os
import stat

import pytest

from phenossl.atomic import atomic_path, atomic_write_text
from phenossl.errors import OutputExistsError


def test_written_file_gets_normal_permissions(tmp_path):
    path = atomic_write_text(tmp_path / "a.txt", "hello")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "result.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.csv"]


def test_no_silent_overwrite(tmp_path):
    target = tmp_path / "result.csv"
    target.write_text("old")
    with pytest.raises(OutputExistsError, match="already exists"):
        atomic_write_text(target, "new", overwrite=False)
    assert target.read_text() == "old"
    atomic_write_text(target, "new", overwrite=True)
    assert target.read_text() == "new"
