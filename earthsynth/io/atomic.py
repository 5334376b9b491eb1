"""Atomic outputs: write under a temporary name in the same folder, rename when complete.

A killed run therefore never leaves a half-written file under its final name: either the final file is the
previous complete one (or absent), or it is the new complete one. The temporary name keeps the final suffix
(GDAL, PIL and trimesh pick the format from it) and starts with `TEMP_PREFIX`, so leftovers of a killed run
are easy to recognise (`remove_stale_temps`) and are ignored by git.

    with atomic_path("out/dsm.tif") as tmp:
        write_something(tmp)          # on success tmp is renamed to out/dsm.tif
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from earthsynth.errors import OutputError

TEMP_PREFIX = ".earthsynth-tmp-"


def temp_sibling(final_path: str | Path) -> Path:
    """A fresh temporary name next to `final_path`: `.earthsynth-tmp-<stem>-<random><suffix>`."""
    final_path = Path(final_path)
    token = secrets.token_hex(4)
    return final_path.with_name(f"{TEMP_PREFIX}{final_path.stem}-{token}{final_path.suffix}")


def ensure_writable_parent(final_path: str | Path) -> Path:
    """Create the parent folder if needed and check that it can be written; return the absolute final path.

    Done before any work starts, so that a long computation does not fail at its very end."""
    final_path = Path(final_path).expanduser().absolute()
    parent = final_path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError("the output folder cannot be created: a file is in the way", path=parent,
                          hint="choose an output folder whose parents are folders, not files") from None
    except OSError as exc:
        raise OutputError(f"the output folder cannot be created ({exc.strerror})", path=parent,
                          hint="choose a folder you can write to, or fix its permissions") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError("the output folder is not writable", path=parent,
                          hint="choose a folder you can write to, or fix its permissions")
    return final_path


def _remove(path: Path) -> None:
    """Remove a temporary file or folder; never raise (we are usually already handling an error)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError:
        pass


@contextmanager
def atomic_path(final_path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `final_path`; on success rename it to `final_path`.

    If the body raises (or is interrupted), the temporary file is removed and the exception re-raised,
    and an existing file at `final_path` is left untouched. If the body wrote nothing, nothing is renamed
    and an OutputError is raised (a writer that silently produced no file is a bug worth hearing about)."""
    final_path = ensure_writable_parent(final_path)
    if final_path.is_dir():
        raise OutputError("the output path is an existing folder, not a file", path=final_path,
                          hint="choose another output name or remove that folder")
    tmp_path = temp_sibling(final_path)
    try:
        yield tmp_path
        if not tmp_path.exists():
            raise OutputError("the writer produced no file", path=final_path,
                              hint="this is a bug in the writer; please report it")
        os.replace(tmp_path, final_path)
    except BaseException:
        _remove(tmp_path)
        raise


@contextmanager
def atomic_dir(final_dir: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder next to `final_dir`; on success it replaces `final_dir` as a whole.

    An existing `final_dir` is first renamed aside and deleted only after the new folder is in place, so
    at every moment `final_dir` is either the old complete folder or the new complete one."""
    final_dir = Path(final_dir).expanduser().absolute()
    if final_dir.exists() and not final_dir.is_dir():
        raise OutputError("the output path is an existing file, not a folder", path=final_dir,
                          hint="choose another output folder name or remove that file")
    ensure_writable_parent(final_dir)
    tmp_dir = temp_sibling(final_dir)
    tmp_dir.mkdir()
    try:
        yield tmp_dir
        _replace_dir(tmp_dir, final_dir)
    except BaseException:
        _remove(tmp_dir)
        raise


def _replace_dir(new_dir: Path, final_dir: Path) -> None:
    if not final_dir.exists():
        os.replace(new_dir, final_dir)
        return
    # os.replace cannot replace a non-empty folder: move the old one aside first
    old_dir = temp_sibling(final_dir.with_name(final_dir.name + "-old"))
    os.replace(final_dir, old_dir)
    try:
        os.replace(new_dir, final_dir)
    except BaseException:
        os.replace(old_dir, final_dir)
        raise
    _remove(old_dir)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temporaries left in `folder` (not recursively) by a killed run; return what was removed.

    Only call this when no other process is writing into `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX))
    for path in stale:
        _remove(path)
    return stale
