"""Atomic, no-surprise file writing: a crash or a full disk never leaves a half-written result behind,
and nothing is replaced unless the caller asked for it."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from phenossl.errors import DiskFullError, InputError, OutputExistsError, PhenosslError

# mkstemp creates owner-only (0600) files; results should get the usual permissions of new files.
_UMASK = os.umask(0)
os.umask(_UMASK)


def check_can_write(path: str | os.PathLike, overwrite: bool, folder: bool = False) -> Path:
    """Raise OutputExistsError if ``path`` exists and ``overwrite`` is False, or if a file target is a folder
    (a file is never written over a folder; ``folder=True`` for targets that are folders, like a tile store);
    return it as a Path."""
    path = Path(path)
    if path.is_dir() and not folder:
        raise OutputExistsError(
            f"{path} is a folder, not a file: phenossl will not replace a folder with a file. Choose a file name "
            "(e.g. inside that folder)."
        )
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path} already exists. Choose another name, or ask to overwrite it "
            "(--overwrite on the command line, or confirm in the dialog)."
        )
    return path


def _temporary_beside(target: Path) -> Path:
    """An empty temporary file in ``target``'s folder (so the final rename is atomic), with a clear error when
    that folder cannot be written."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise unwritable_error(target, exc) from exc
    os.close(fd)
    return Path(name)


def unwritable_error(target: Path, exc: OSError) -> PhenosslError:
    """The PhenosslError that says why ``target`` could not be written (full disk, read-only, permissions)."""
    if exc.errno == errno.ENOSPC:
        return DiskFullError(
            f"The disk holding {target.parent} is full: {target.name} could not be written "
            f"({free_space_text(target.parent)}). Nothing was replaced. Free some space and run the command again."
        )
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        what = "is on a read-only file system" if exc.errno == errno.EROFS else "is not writable for you"
        return InputError(
            f"Cannot write {target.name}: the folder {target.parent} {what}. Nothing was written. Choose a folder "
            "you can write to (e.g. in your home folder)."
        )
    return InputError(f"Cannot write {target}: {exc.strerror or exc}. Nothing was written.")


def free_space_text(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free there"
    except OSError:
        return "free space unknown"


@contextlib.contextmanager
def _writing(target: Path) -> Iterator[None]:
    """Turn an OSError raised while writing ``target``'s temporary into the clear message the user can act on."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM):
            raise unwritable_error(target, exc) from exc
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    The temporary file lives in the same directory so that ``os.replace`` is atomic. On any error
    the temporary file is removed and ``path`` is left exactly as it was.
    """
    target = check_can_write(path, overwrite)
    tmp = _temporary_beside(target)
    try:
        with _writing(target):
            yield tmp
        if not overwrite and target.exists():  # appeared while we were writing
            raise OutputExistsError(f"{target} appeared while writing; it was not replaced.")
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_paths(paths, overwrite: bool = True) -> Iterator[list[Path]]:
    """Several files that belong together (a result and its description): yield one temporary path per target;
    when the block succeeds, all of them are moved into place, and on any error none is (the temporaries are
    removed, and targets already replaced are put back)."""
    targets = [check_can_write(p, overwrite) for p in paths]
    temporaries: list[Path] = []
    try:
        for target in targets:
            temporaries.append(_temporary_beside(target))
        with _writing(targets[0]):
            yield temporaries
        if not overwrite and any(t.exists() for t in targets):
            raise OutputExistsError(f"{', '.join(str(t) for t in targets if t.exists())} appeared while writing; "
                                    "nothing was replaced.")
        _replace_all(temporaries, targets)
    finally:
        for tmp in temporaries:
            if tmp.exists():
                tmp.unlink()


def _replace_all(temporaries: list[Path], targets: list[Path]) -> None:
    """Move each temporary onto its target; if one move fails, undo the ones made (old files restored)."""
    done: list[tuple[Path, Path | None]] = []
    try:
        for tmp, target in zip(temporaries, targets):
            backup = None
            if target.exists():
                backup = target.with_name(f".{target.name}.{os.getpid()}.previous")
                os.replace(target, backup)
            done.append((target, backup))
            if tmp.is_file():
                os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, target)
    except BaseException:
        for target, backup in reversed(done):
            if backup is not None:
                os.replace(backup, target)
            elif target.exists():
                target.unlink()
        raise
    for _, backup in done:
        if backup is not None and backup.exists():
            backup.unlink()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object], overwrite: bool = True) -> Path:
    """Call ``write(tmp_path)`` then move the result onto ``path`` atomically. Returns ``path``."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    """Write text atomically (UTF-8)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)
