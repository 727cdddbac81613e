"""Which devices exist here, and which one to train on (auto: CUDA, then Apple MPS, then CPU)."""

from __future__ import annotations

from dataclasses import dataclass

from phenossl.errors import ConfigError


@dataclass(frozen=True)
class DeviceOption:
    """A device the user can pick: ``name`` is what torch understands, ``label`` what a human reads."""

    name: str
    label: str
    kind: str  # "cuda", "mps" or "cpu"


def available_devices() -> list[DeviceOption]:
    """Devices that exist on this machine, best first (only these are offered in the widget)."""
    import torch

    options = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            memory_gb = props.total_memory / 2**30
            options.append(DeviceOption(f"cuda:{index}", f"GPU {index}: {props.name} ({memory_gb:.0f} GB)", "cuda"))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        options.append(DeviceOption("mps", "Apple GPU (MPS)", "mps"))
    options.append(DeviceOption("cpu", "CPU (slower: fine for a few hundred cells)", "cpu"))
    return options


def resolve_device(name: str = "auto"):
    """Turn 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps' into a torch.device that exists here."""
    import torch

    options = available_devices()
    if name in (None, "", "auto"):
        return torch.device(options[0].name)
    wanted = "cuda:0" if name == "cuda" else name
    for option in options:
        if option.name == wanted:
            return torch.device(option.name)
    listed = ", ".join(o.name for o in options)
    raise ConfigError(f"device {name!r} is not available on this machine; available: {listed} (or 'auto')")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device out-of-memory error (CUDA's own class, or MPS/older CUDA's RuntimeError)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
