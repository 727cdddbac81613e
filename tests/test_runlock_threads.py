"""The run folder's lock between threads of one process (napari's workers): the second writer waits for the first,
so a check made under the lock still holds when it writes; one thread may take it again; a long wait ends in a
clear error that names what holds the folder."""

import threading
import time

import pytest

from phenossl import runlock
from phenossl.errors import RunFolderBusyError
from phenossl.runlock import run_folder_lock


def test_a_second_thread_waits_for_the_first_and_never_overlaps(tmp_path):
    events = []
    inside = threading.Event()

    def first():
        with run_folder_lock(tmp_path, "first"):
            events.append("first in")
            inside.set()
            time.sleep(0.3)
            events.append("first out")

    def second():
        inside.wait()
        with run_folder_lock(tmp_path, "second"):
            events.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert events == ["first in", "first out", "second in"]
    assert not (tmp_path / runlock.HOLDER_FILE).exists()


def test_one_thread_takes_it_again(tmp_path):
    with run_folder_lock(tmp_path, "outer"), run_folder_lock(tmp_path, "inner"):
        assert runlock.read_holder(tmp_path)["what"] == "outer"
    with run_folder_lock(tmp_path, "later"):  # released by both
        pass


def test_a_long_wait_is_a_clear_error_naming_the_holder(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "THREAD_WAIT_SECONDS", 0.2)
    release = threading.Event()
    held = threading.Event()

    def holder():
        with run_folder_lock(tmp_path, "training (napari)"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    try:
        with pytest.raises(RunFolderBusyError, match=r"another task of this session \(training \(napari\)\)"), \
                run_folder_lock(tmp_path, "saving"):
            pass
    finally:
        release.set()
        thread.join(10)
