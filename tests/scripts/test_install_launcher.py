"""The application-menu entry the demo set-up writes, so napari with phenossl starts without a terminal."""

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "install_launcher.sh"


def _run(venv: Path, data_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_DATA_HOME": str(data_home), "HOME": str(data_home.parent)}
    return subprocess.run(["bash", str(SCRIPT), str(venv)], env=env, capture_output=True, text=True, check=False)


def _fake_venv(tmp_path: Path) -> Path:
    napari = tmp_path / "venv" / "bin" / "napari"
    napari.parent.mkdir(parents=True)
    napari.write_text("#!/bin/sh\n")
    napari.chmod(0o755)
    return napari.parents[1]


def test_the_entry_starts_the_environments_napari_and_can_be_written_again(tmp_path):
    venv, data_home = _fake_venv(tmp_path), tmp_path / "share"
    assert _run(venv, data_home).returncode == 0
    entry = data_home / "applications" / "phenossl-napari.desktop"
    lines = entry.read_text().splitlines()
    assert lines[0] == "[Desktop Entry]" and "Name=napari (phenossl)" in lines
    assert f'Exec="{venv / "bin" / "napari"}"' in lines and "Terminal=false" in lines
    assert _run(venv, data_home).returncode == 0  # safe to run again
    assert not list(entry.parent.glob(".phenossl-napari.*"))  # no temporary file left behind


def test_an_entry_phenossl_did_not_write_is_left_alone(tmp_path):
    venv, data_home = _fake_venv(tmp_path), tmp_path / "share"
    entry = data_home / "applications" / "phenossl-napari.desktop"
    entry.parent.mkdir(parents=True)
    entry.write_text("[Desktop Entry]\nName=mine\n")
    result = _run(venv, data_home)
    assert result.returncode == 1 and "not written by phenossl" in result.stderr
    assert entry.read_text() == "[Desktop Entry]\nName=mine\n"


def test_without_a_set_up_environment_it_says_what_to_run(tmp_path):
    result = _run(tmp_path / "nothing", tmp_path / "share")
    assert result.returncode == 1 and "setup.sh demo" in result.stderr
