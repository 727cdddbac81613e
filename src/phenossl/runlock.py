"""One writer per run folder: an exclusive lock held for as long as a command writes into the folder.

Two processes writing into one run folder (a second ``phenossl run --overwrite`` while the first still trains)
would mix their results silently: one's configuration and checkpoint, the other's clusters. Every stage that
writes into a run folder takes this lock first; a second process fails at once with a message naming the folder
and the process that holds it. The lock is ``filelock``'s (an OS file lock, ``flock`` on Unix): the kernel
releases it when its process ends in any way, ``kill -9`` included, so a crash never leaves a folder locked.

Within one thread the lock is re-entrant (a whole ``phenossl run`` holds it while each stage takes it again); two
threads of one process (napari's workers) take it in turn, the second waiting for the first.
Taking it also removes the temporaries a crashed writer left in the folder (``.<name>.<random>.tmp``: an
interrupted checkpoint can leave hundreds of megabytes), since no other writer can be using them.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from phenossl.errors import RunFolderBusyError

LOCK_FILE = ".phenossl.lock"
HOLDER_FILE = ".phenossl.lock.json"  # who holds the lock: for the message the second process gets

_held: dict[Path, list] = {}  # folder -> [FileLock, depth]: the locks this process holds
_thread_locks: dict[Path, threading.RLock] = {}  # folder -> the lock the threads of this process take in turn
_thread_holders: dict[Path, str] = {}  # folder -> what the thread holding it does (for the waiting one's message)
_guard = threading.Lock()
THREAD_WAIT_SECONDS = 120.0  # a second writer thread of this process waits this long, then gets a clear error


@contextlib.contextmanager
def run_folder_lock(folder: str | os.PathLike, what: str = "writing") -> Iterator[Path]:
    """Hold the exclusive lock of run ``folder`` (created if needed) while the block runs; ``what`` says what
    this process does there, for the message another process gets. Raises RunFolderBusyError at once when
    another process holds it. Another thread of this process (napari's workers) waits for it, up to
    THREAD_WAIT_SECONDS, so that a check made under the lock (``save_clustering``'s ``only_if``) still holds
    when the files are written."""
    from filelock import FileLock, Timeout

    from phenossl.train.distributed import is_main_process

    root = Path(folder).resolve()
    if not is_main_process():  # a torchrun job is one writer: rank 0 holds the lock, the other ranks write nothing
        yield root
        return
    with _guard:
        folder_lock = _thread_locks.setdefault(root, threading.RLock())
    if not folder_lock.acquire(timeout=THREAD_WAIT_SECONDS):
        raise RunFolderBusyError(
            f"The run folder {root} is in use by another task of this session ({_thread_holders.get(root, 'writing')}) "
            f"for over {THREAD_WAIT_SECONDS:.0f} s. Wait for it to finish (or cancel it), then try again. Nothing "
            "was changed.")
    try:
        with _guard:
            entry = _held.get(root)
            if entry is not None:
                entry[1] += 1
            else:
                root.mkdir(parents=True, exist_ok=True)
                lock = FileLock(str(root / LOCK_FILE), timeout=0, is_singleton=False)
                try:
                    lock.acquire()
                except Timeout:
                    raise RunFolderBusyError(busy_message(root)) from None
                _held[root] = entry = [lock, 1]
                _thread_holders[root] = what
                _write_holder(root, what)
                remove_stale_temporaries(root)
        try:
            yield root
        finally:
            with _guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del _held[root]
                    _thread_holders.pop(root, None)
                    with contextlib.suppress(OSError):
                        (root / HOLDER_FILE).unlink()
                    entry[0].release()
    finally:
        folder_lock.release()


def busy_message(root: Path) -> str:
    holder = read_holder(root)
    if holder:
        who = (f"process {holder.get('pid')} on {holder.get('host')} ({holder.get('what')}, since "
               f"{holder.get('started')}: {holder.get('command')})")
    else:
        who = "another process"
    return (f"The run folder {root} is in use by {who}. Two processes writing into one run would mix their "
            "results. Wait for it to finish (or stop it), or give this run another output.dir. Nothing was changed.")


def read_holder(root: Path) -> dict | None:
    try:
        return json.loads((root / HOLDER_FILE).read_text())
    except (OSError, ValueError):
        return None


def _write_holder(root: Path, what: str) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
              "started": _dt.datetime.now().isoformat(timespec="seconds"),
              "command": " ".join(["phenossl" if i == 0 else a for i, a in enumerate(sys.argv)])[:300]}
    with contextlib.suppress(OSError):  # the lock itself is what protects; the description is a courtesy
        (root / HOLDER_FILE).write_text(json.dumps(holder))


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Delete the atomic-write temporaries (``.<name>.<random>.tmp``) left in ``root`` by a writer that died."""
    removed = []
    for path in root.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed
