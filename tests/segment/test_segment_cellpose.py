"""The cellpose backend: finding weights offline, refusing what it cannot use, and loading a real network.

No test here mocks cellpose. The loading tests build cellpose's own Cellpose-SAM network with a fixed
seed, save its weights to a file and hand that file to the backend, so the real load path runs
(CellposeModel, the network's load_model, our checks) without any network access. Random weights
segment arbitrarily, so those tests check loading, not masks. They are marked slow: building and
saving the network takes 5-11 s and one 256x256 forward pass of its ViT-L 20-35 s on 2 CPU cores
(measured 2026-11, cellpose 4.2.1.1, torch 2.14.1; the whole file runs in about 60 s).

Cellpose reads ``CELLPOSE_LOCAL_MODELS_PATH`` once, at import; the backend reads it again at each
call (``models_dir``), so setting the variable with monkeypatch is what moves the folder it checks.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from phenossl.errors import ConfigError, InputError, NoNucleiError, WeightsNotFoundError
from phenossl.segment import segment_nuclei
from phenossl.segment.cellpose_backend import (
    MODEL_URL,
    _cached_model,
    clear_model_cache,
    load_model,
    resolve_device,
    resolve_weights,
)


@pytest.fixture
def models_folder(tmp_path, monkeypatch) -> Path:
    """An empty Cellpose models folder (not created yet), named the way users name it."""
    folder = tmp_path / "cellpose-models"
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(folder))
    return folder


@pytest.fixture
def offline(monkeypatch) -> list[str]:
    """No network, and cellpose's own downloader and default-model fallback refuse to run.

    These are tripwires, not stand-ins: the code under test must never reach them. Returns the list
    of attempts, which each test checks is empty.
    """
    attempts: list[str] = []

    def refuse(what):
        def tripwire(*args, **kwargs):
            attempts.append(f"{what}{args[:2]}")
            raise OSError(f"test tripwire: {what} must not be called")

        return tripwire

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    from phenossl._triton_guard import preload_triton

    preload_triton()
    import cellpose.models
    import cellpose.utils

    monkeypatch.setattr(cellpose.models, "cache_model_path", refuse("cellpose.models.cache_model_path"))
    monkeypatch.setattr(cellpose.utils, "download_url_to_file", refuse("cellpose.utils.download_url_to_file"))
    return attempts


def small_nucleus_image() -> np.ndarray:
    yy, xx = np.mgrid[:64, :64]
    image = np.where((yy - 30) ** 2 + (xx - 34) ** 2 <= 12**2, 1000.0, 100.0)
    return (image + np.random.default_rng(0).normal(0, 10, image.shape)).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Finding the weights (no network, nothing written)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cpsam", "cpsam_v2"])
def test_a_named_model_missing_from_the_models_folder_says_where_it_looked_and_how_to_get_it(
    models_folder, offline, name
):
    with pytest.raises(WeightsNotFoundError) as error:
        segment_nuclei(small_nucleus_image(), backend="cellpose", model=name, device="cpu")
    message = str(error.value)
    assert str(models_folder / name) in message  # where it looked
    assert f"{MODEL_URL}{name}" in message and "copy the file to" in message  # how to get it
    assert "never downloads" in message and "weights=" in message
    assert offline == []  # no download tried
    assert not models_folder.exists()  # cellpose would have created it before downloading


def test_without_model_or_weights_the_default_model_is_looked_for_locally(models_folder, offline):
    models_folder.mkdir()
    with pytest.raises(WeightsNotFoundError, match="'cpsam_v2' is not on this machine"):
        segment_nuclei(small_nucleus_image(), backend="cellpose", device="cpu")
    assert offline == [] and list(models_folder.iterdir()) == []


def test_a_named_model_in_the_models_folder_resolves_to_its_file(models_folder):
    models_folder.mkdir()
    (models_folder / "cpsam").write_bytes(b"weights")
    assert resolve_weights("cpsam") == (models_folder / "cpsam").resolve()


def test_the_models_folder_is_read_at_call_time_not_at_import(tmp_path, monkeypatch):
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cpsam").write_bytes(name.encode())
        monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path / name))
        assert resolve_weights("cpsam") == (tmp_path / name / "cpsam").resolve()


@pytest.mark.parametrize("name", ["cpsam_v9", "sam", "CPSAM"])
def test_an_unknown_name_is_a_config_error_not_a_silent_switch_to_another_model(models_folder, offline, name):
    with pytest.raises(ConfigError) as error:
        segment_nuclei(small_nucleus_image(), backend="cellpose", model=name, device="cpu")
    message = str(error.value)
    assert f"Unknown Cellpose model {name!r}" in message
    assert "cpsam_v2" in message and "cpsam" in message and "path of a weights file" in message
    assert offline == []  # cellpose's fallback (download of its default model) was not reached


@pytest.mark.parametrize("name", ["nuclei", "cyto3", "cyto2"])
def test_a_cellpose_3_model_name_says_it_needs_cellpose_below_4(models_folder, offline, name):
    with pytest.raises(ConfigError) as error:
        segment_nuclei(small_nucleus_image(), backend="cellpose", model=name, device="cpu")
    message = str(error.value)
    assert f"{name!r} is a Cellpose 3 model" in message and "cellpose < 4" in message
    assert "classical" in message  # the other way out
    assert offline == []


def test_a_model_listed_by_the_cellpose_gui_but_gone_is_weights_not_found(models_folder, offline):
    models_folder.mkdir()
    (models_folder / "gui_models.txt").write_text("my_nuclei_model\n\n")
    with pytest.raises(WeightsNotFoundError, match=r"listed in gui_models.txt but its file is gone"):
        resolve_weights("my_nuclei_model")
    (models_folder / "my_nuclei_model").write_bytes(b"weights")
    assert resolve_weights("my_nuclei_model").name == "my_nuclei_model"
    assert offline == []


def test_a_weights_path_that_does_not_exist_names_the_full_path(tmp_path, offline, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsNotFoundError) as error:
        segment_nuclei(small_nucleus_image(), backend="cellpose", weights="trained/nuclei.pth", device="cpu")
    assert str(tmp_path / "trained" / "nuclei.pth") in str(error.value)
    assert offline == []


def test_a_folder_instead_of_a_weights_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="is a folder; pass the weights file inside it"):
        resolve_weights(tmp_path)


@pytest.mark.parametrize("weights", [42, "   "])
def test_weights_that_are_neither_name_nor_path_are_a_config_error(weights):
    with pytest.raises(ConfigError, match=r"not a model name or a file path"):
        resolve_weights(weights)


# --------------------------------------------------------------------------------------------------
# Files that are not usable Cellpose 4 weights (refused before any network is built)
# --------------------------------------------------------------------------------------------------


def write_torch(path: Path, obj) -> Path:
    import torch

    torch.save(obj, path)
    return path


def corrupt_files(folder: Path):
    import torch

    garbage = folder / "garbage.pth"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    truncated = write_torch(folder / "truncated.pth", {"W2": torch.zeros(192, 3, 8, 8)})
    truncated.write_bytes(truncated.read_bytes()[:300])
    return {
        "garbage": (garbage, "corrupt, incomplete or not a PyTorch weights file"),
        "truncated": (truncated, "corrupt, incomplete or not a PyTorch weights file"),
        "not tensors": (write_torch(folder / "list.pt", [1, 2, 3]), "not a state dict of tensors"),
        "cellpose 3": (
            write_torch(folder / "cp3.pth", {"downsample.down.res_down_0.conv.0.weight": torch.zeros(2)}),
            "cellpose < 4",
        ),
    }


@pytest.mark.parametrize("kind", ["garbage", "truncated", "not tensors", "cellpose 3"])
def test_an_unusable_weights_file_is_an_input_error_naming_the_file(tmp_path, offline, kind):
    path, reason = corrupt_files(tmp_path)[kind]
    with pytest.raises(InputError) as error:
        segment_nuclei(small_nucleus_image(), backend="cellpose", weights=path, device="cpu")
    assert str(path.resolve()) in str(error.value) and reason in str(error.value)
    assert offline == []


# --------------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------------


def test_devices_are_checked_against_this_machine():
    import torch

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ConfigError, match=r"device='gpu' is not a device; use one of auto, cpu, cuda"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(
            ConfigError, match=r"device='cuda:0' is not available on this machine; available: cpu"
        ):
            resolve_device("cuda:0")


# --------------------------------------------------------------------------------------------------
# A real Cellpose-SAM network from a weights file made here
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_cpsam_weights(tmp_path_factory) -> Path:
    """Cellpose-SAM weights with random values: cellpose's own CPSAM network (the one CellposeModel
    builds for SAM-backbone files) initialised under a fixed seed, saved as bfloat16 (~0.6 GB
    instead of 1.2 GB; cellpose casts them to the network's dtype when loading)."""
    import torch

    from phenossl._triton_guard import preload_triton

    preload_triton()
    from cellpose.vit import CPSAM

    with torch.random.fork_rng():
        torch.manual_seed(0)
        network = CPSAM(dtype=torch.float32)
    path = tmp_path_factory.mktemp("cellpose-weights") / "random_cpsam_bf16.pth"
    torch.save({key: value.to(torch.bfloat16) for key, value in network.state_dict().items()}, path)
    del network
    yield path
    clear_model_cache()  # frees the loaded network (1.2 GB)
    path.unlink(missing_ok=True)


@pytest.mark.slow
def test_random_cpsam_weights_load_for_real_and_segment_offline(random_cpsam_weights, models_folder, offline):
    import torch

    # random weights (seed 0) see no nucleus in this image (cellpose 4.2.1): the run goes through cellpose's
    # whole inference and ends in phenossl's clear message, naming the file and what to try
    with pytest.raises(NoNucleiError) as error:
        segment_nuclei(small_nucleus_image(), backend="cellpose", weights=random_cpsam_weights, device="cpu")
    message = str(error.value)
    assert str(random_cpsam_weights.resolve()) in message and "found no nucleus" in message
    assert "cellprob_threshold" in message and "'classical' backend" in message

    # the network holds the file's numbers, not a fresh initialisation
    model = load_model(random_cpsam_weights.resolve(), torch.device("cpu"), False)
    assert model.backbone == "sam_vitl" and next(model.net.parameters()).dtype == torch.float32
    saved = torch.load(random_cpsam_weights, mmap=True, weights_only=True)
    loaded = model.net.state_dict()
    assert set(loaded) == set(saved)
    for key in ("encoder.patch_embed.proj.weight", "encoder.blocks.23.mlp.lin2.weight", "out.weight", "W2"):
        assert torch.equal(loaded[key], saved[key].float()), key
    assert offline == [] and not models_folder.exists()


@pytest.mark.slow  # needs the 0.6 GB weights file and one load (10-30 s on 2 busy cores)
def test_the_same_file_is_loaded_once_also_when_reached_by_model_name(random_cpsam_weights, models_folder):
    import torch

    cpu = torch.device("cpu")
    first = load_model(random_cpsam_weights.resolve(), cpu, False)
    before = _cached_model.cache_info()
    assert load_model(random_cpsam_weights.resolve(), cpu, False) is first

    models_folder.mkdir()
    (models_folder / "cpsam").symlink_to(random_cpsam_weights)  # the usual name, in the models folder
    assert load_model(resolve_weights("cpsam"), cpu, False) is first
    after = _cached_model.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (2, 0)


def test_a_cellpose_4_file_missing_most_tensors_is_refused_not_half_random(tmp_path, offline):
    import torch

    partial = write_torch(tmp_path / "partial.pth", {"W2": torch.eye(192).reshape(192, 3, 8, 8)})
    with pytest.raises(InputError) as error:
        segment_nuclei(small_nucleus_image(), backend="cellpose", weights=partial, device="cpu")
    message = str(error.value)
    assert str(partial.resolve()) in message and "not a complete Cellpose 4 model" in message
    assert offline == []
