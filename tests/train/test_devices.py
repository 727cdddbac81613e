"""Device choice: auto takes CUDA, then MPS, then the CPU; a device that is not here is a clear error."""

import pytest
import torch

from phenossl.errors import ConfigError
from phenossl.train.devices import available_devices, is_out_of_memory, resolve_device


class _Properties:
    name, total_memory = "NVIDIA H200", 141 * 2**30


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: _Properties())
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_without_an_accelerator_auto_is_the_cpu_and_cuda_is_refused(no_accelerator):
    assert [d.name for d in available_devices()] == ["cpu"]
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"device 'cuda' is not available on this machine; available: cpu"):
        resolve_device("cuda")


def test_gpus_are_listed_by_name_first_and_auto_takes_the_first(two_gpus):
    options = available_devices()
    assert [d.name for d in options] == ["cuda:0", "cuda:1", "cpu"]
    assert options[1].label == "GPU 1: NVIDIA H200 (141 GB)"
    assert resolve_device("auto") == torch.device("cuda:0")
    assert resolve_device("cuda") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match="'cuda:2' is not available"):
        resolve_device("cuda:2")


def test_apple_gpu_comes_before_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert [d.name for d in available_devices()] == ["mps", "cpu"]
    assert resolve_device("auto") == torch.device("mps")


def test_out_of_memory_is_recognised_in_both_spellings():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
