"""Atomic outputs: complete or absent, never half written."""

from pathlib import Path

import pytest

from earthsynth.errors import OutputError
from earthsynth.io.atomic import TEMP_PREFIX, atomic_dir, atomic_path, remove_stale_temps


def test_atomic_path_renames_on_success_and_keeps_the_suffix(tmp_path):
    final = tmp_path / "sub" / "dsm.tif"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(TEMP_PREFIX) and tmp.suffix == ".tif"
        assert not final.exists()
        tmp.write_bytes(b"complete")
    assert final.read_bytes() == b"complete"
    assert [p.name for p in final.parent.iterdir()] == ["dsm.tif"]


def test_atomic_path_on_error_removes_temp_and_keeps_old_file(tmp_path):
    final = tmp_path / "out.bin"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert final.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_path_replaces_an_existing_file(tmp_path):
    final = tmp_path / "out.bin"
    final.write_bytes(b"old")
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"new")
    assert final.read_bytes() == b"new"


def test_atomic_path_complains_when_nothing_was_written(tmp_path):
    with pytest.raises(OutputError, match="produced no file"):
        with atomic_path(tmp_path / "x.txt"):
            pass


def test_unwritable_parent_is_reported_before_any_work(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    ran = []
    with pytest.raises(OutputError) as info:
        with atomic_path(blocker / "out.tif"):
            ran.append(True)
    assert not ran
    assert "a_file" in str(info.value) and "What to do" in str(info.value)


def test_output_path_that_is_a_folder_is_refused(tmp_path):
    with pytest.raises(OutputError, match="existing folder"):
        with atomic_path(tmp_path):
            pass


def test_atomic_dir_creates_and_replaces_whole_folders(tmp_path):
    final = tmp_path / "splats"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (final / "a.txt").read_text() == "1"
    with atomic_dir(final) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["splats"]


def test_atomic_dir_on_error_leaves_the_old_folder(tmp_path):
    final = tmp_path / "run"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(final) as tmp:
            (tmp / "new.txt").write_text("new")
            raise KeyboardInterrupt
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_remove_stale_temps(tmp_path):
    (tmp_path / f"{TEMP_PREFIX}dsm-1234.tif").write_bytes(b"half")
    (tmp_path / f"{TEMP_PREFIX}tiles-99").mkdir()
    (tmp_path / "keep.tif").write_bytes(b"whole")
    removed = remove_stale_temps(tmp_path)
    assert len(removed) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["keep.tif"]
    assert remove_stale_temps(Path(tmp_path / "missing")) == []
