"""Nuclei with Cellpose 4 (Cellpose-SAM), from weights that are already on this machine.

Cellpose 4.2 downloads any built-in model missing from its models folder, and quietly swaps in its
default model when it does not know a name. Neither is acceptable offline or in a pipeline whose
results must say which model made them, so this module resolves the name or path itself, checks
the file, and only ever hands Cellpose an existing file path: no download is ever attempted.

Loaded models are cached per (weights file, device, precision), so segmenting many fields loads
the weights once. cellpose and torch are imported inside the functions that need them (after
`preload_triton`, see ``phenossl._triton_guard``).
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np

from phenossl.errors import ConfigError, InputError, NoNucleiError, WeightsNotFoundError

DEFAULT_MODEL = "cpsam_v2"  # cellpose 4.2's own default
# Built-in names of Cellpose 4 (cellpose.models.MODEL_NAMES in 4.2); the installed list is used when known.
CELLPOSE4_MODELS = ("cpsam_v2", "cpsam", "cpdino", "cpdino-vitb")
# Names that only Cellpose <= 3 understands: its residual U-Net weights do not load in Cellpose 4.
CELLPOSE3_MODELS = (
    "cyto", "cyto2", "cyto3", "nuclei", "tissuenet_cp3", "livecell_cp3", "yeast_PhC_cp3", "yeast_BF_cp3",
    "bact_phase_cp3", "bact_fluor_cp3", "deepbacs_cp3", "cyto2_cp3", "tissuenet", "livecell",
    "neurips_cellpose_default", "neurips_cellpose_transformer", "neurips_grayscale_cyto2",
)  # fmt: skip
MODEL_URL = "https://huggingface.co/mouseland/cellpose-sam/resolve/main/"
WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")

_load_lock = threading.Lock()


def segment_cellpose(
    image: np.ndarray,
    *,
    diameter: float | None = None,
    model: str | os.PathLike = DEFAULT_MODEL,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    use_bfloat16: bool | None = None,
    flow_threshold: float = 0.4,
    cellprob_threshold: float = 0.0,
    min_size: int = 15,
    batch_size: int = 8,
) -> np.ndarray:
    """Label nuclei with a Cellpose 4 model; returns int32 labels 1..n (0 = background).

    model: a built-in model name ("cpsam_v2", "cpsam", ...) looked up in the Cellpose models folder
        (``$CELLPOSE_LOCAL_MODELS_PATH``, else ``~/.cellpose/models``), or the path of a weights file.
    weights: the path of a weights file (e.g. one you trained); when given it overrides ``model``.
    diameter: typical nucleus diameter in pixels; the image is rescaled so that it becomes 30 px
        (None: no rescaling, Cellpose-SAM copes with a wide range of sizes).
    device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:N" or "mps".
    use_bfloat16: half-size weights and activations; None = on CUDA only (on CPU float32 is the safe
        and usually faster choice).
    """
    path = resolve_weights(model if weights is None else weights)
    torch_device = resolve_device(device)
    bfloat16 = torch_device.type == "cuda" if use_bfloat16 is None else bool(use_bfloat16)
    model = load_model(path, torch_device, bfloat16)
    masks = model.eval(
        image,
        diameter=diameter,
        flow_threshold=flow_threshold,
        cellprob_threshold=cellprob_threshold,
        min_size=min_size,
        batch_size=batch_size,
    )[0]
    from skimage.segmentation import relabel_sequential

    labels = relabel_sequential(np.asarray(masks).astype(np.int32, copy=False))[0]
    if labels.max() == 0:
        low, high = float(np.nanmin(image)), float(np.nanmax(image))
        raise NoNucleiError(
            f"Cellpose model {path} found no nucleus (image intensities {low:g} to {high:g}, "
            f"diameter={diameter}, cellprob_threshold={cellprob_threshold}, flow_threshold={flow_threshold}). "
            "Try the nucleus diameter in pixels (or a smaller one), a lower cellprob_threshold (e.g. -2), "
            "a higher flow_threshold, or the 'classical' backend."
        )
    return labels


def models_dir() -> Path:
    """Where Cellpose keeps named models: ``$CELLPOSE_LOCAL_MODELS_PATH``, else ``~/.cellpose/models``.

    Read at call time (cellpose reads it once at import), so the folder we check is the one named now.
    """
    env = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH")
    return Path(env).expanduser() if env else Path.home() / ".cellpose" / "models"


def resolve_weights(weights: str | os.PathLike) -> Path:
    """The weights file for a model name or path; raises if it is not on this machine. Never downloads."""
    text = os.fspath(weights).strip() if isinstance(weights, (str, os.PathLike)) else None
    if not text:
        raise ConfigError(
            f"weights={weights!r} is not a model name or a file path; use e.g. {DEFAULT_MODEL!r} "
            "or the path of a Cellpose 4 weights file."
        )
    path = Path(text).expanduser()
    if path.is_file():
        return path.resolve()
    if path.is_dir():
        raise InputError(f"weights={text!r} is a folder; pass the weights file inside it.")
    if _looks_like_path(text):
        raise WeightsNotFoundError(
            f"Cellpose weights file {path.resolve()} does not exist. Check the path, or pass a built-in "
            f"model name ({', '.join(CELLPOSE4_MODELS)}) whose file is in {models_dir()}."
        )
    if text in CELLPOSE3_MODELS:
        raise ConfigError(
            f"{text!r} is a Cellpose 3 model; it needs cellpose < 4 and the installed cellpose is "
            f"{cellpose_version()}, whose models are {', '.join(_builtin_names())}. Use one of those "
            "(Cellpose-SAM segments nuclei without a dedicated model), or the 'classical' backend."
        )
    folder = models_dir()
    if text in _builtin_names() or text in _user_model_names(folder):
        candidate = folder / text
        if candidate.is_file():
            return candidate.resolve()
        raise WeightsNotFoundError(_missing_model_message(text, candidate))
    raise ConfigError(
        f"Unknown Cellpose model {text!r}. Built-in models of cellpose {cellpose_version()}: "
        f"{', '.join(_builtin_names())}; or pass the path of a weights file (e.g. one you trained)."
    )


def resolve_device(device: str = "auto"):
    """A torch.device for "auto" | "cpu" | "cuda" | "cuda:N" | "mps", checked against this machine."""
    import torch

    name = str(device).strip().lower()
    has_cuda = torch.cuda.is_available()
    has_mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    available = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if has_cuda else 0)]
    available += ["mps"] if has_mps else []
    if name == "auto":
        return torch.device("cuda" if has_cuda else "mps" if has_mps else "cpu")
    if name == "cpu" or (name == "mps" and has_mps):
        return torch.device(name)
    if name == "cuda" or name.startswith("cuda:"):
        index = name.partition(":")[2] or "0"
        if has_cuda and index.isdigit() and int(index) < torch.cuda.device_count():
            return torch.device(f"cuda:{index}")
    if name in ("mps", "cuda") or name.startswith("cuda:"):
        raise ConfigError(
            f"device={device!r} is not available on this machine; available: {', '.join(available)} "
            "(or 'auto' to take the best one)."
        )
    raise ConfigError(f"device={device!r} is not a device; use one of {', '.join(DEVICES)}.")


def load_model(path: Path, device, use_bfloat16: bool):
    """A Cellpose model for a checked weights file, loaded once per (file version, device, precision)."""
    stat = Path(path).stat()
    with _load_lock:  # two napari workers asking at once load it once
        return _cached_model(os.fspath(path), stat.st_mtime_ns, stat.st_size, str(device), use_bfloat16)


def clear_model_cache() -> None:
    """Forget the loaded models (frees their memory once nothing else holds them)."""
    _cached_model.cache_clear()


@lru_cache(maxsize=2)
def _cached_model(path: str, mtime_ns: int, size: int, device: str, use_bfloat16: bool):
    del mtime_ns, size  # part of the cache key only: a replaced file is loaded again
    import torch

    state = read_state_dict(Path(path))
    from phenossl._triton_guard import preload_triton

    preload_triton()
    from cellpose import models

    if _is_dino(state) and not hasattr(models, "CPDINO"):
        raise ConfigError(
            f"{path} holds Cellpose-DINO weights, which need the dinov3 package: "
            "pip install git+https://github.com/facebookresearch/dinov3 (or use a Cellpose-SAM model)."
        )
    try:
        model = models.CellposeModel(
            pretrained_model=path, device=torch.device(device), use_bfloat16=use_bfloat16
        )
    except (RuntimeError, ValueError, KeyError) as error:  # shape mismatch, not a CP4 model...
        raise InputError(
            f"Cellpose could not load the weights in {path}: {error}. The file does not match a "
            "Cellpose 4 network; use a model saved by cellpose >= 4 (e.g. a cpsam file)."
        ) from error
    missing = sorted(set(model.net.state_dict()) - {key.removeprefix("module.") for key in state})
    if missing:  # cellpose loads with strict=False and would keep random values for these
        raise InputError(
            f"{path} lacks {len(missing)} of the network's {len(model.net.state_dict())} tensors "
            f"(e.g. {', '.join(missing[:3])}): it is not a complete Cellpose 4 model. Re-download or "
            "re-export it."
        )
    return model


def read_state_dict(path: Path) -> Mapping:
    """The weights file's tensors (memory-mapped: cheap), or InputError when it is not a CP4 state dict."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:  # truncated zip, pickle garbage, legacy format...
        raise InputError(
            f"Cannot read Cellpose weights from {path} ({type(error).__name__}: {error}). The file is "
            "corrupt, incomplete or not a PyTorch weights file: download it again, or pass another file."
        ) from error
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} is a PyTorch file but not a state dict of tensors; it is not a Cellpose model.")
    if "W2" not in state and "module.W2" not in state:
        raise InputError(
            f"{path} is not a Cellpose 4 model (no 'W2' tensor); Cellpose 3 weights (cyto3, nuclei, "
            f"your own CP3 models) need cellpose < 4 and the installed cellpose is {cellpose_version()}."
        )
    return state


def cellpose_version() -> str:
    try:
        return importlib.metadata.version("cellpose")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _builtin_names() -> tuple[str, ...]:
    """The installed cellpose's built-in names (importing it), else the 4.2 list."""
    try:
        from phenossl._triton_guard import preload_triton

        preload_triton()
        from cellpose.models import MODEL_NAMES
    except ImportError:
        return CELLPOSE4_MODELS
    return tuple(MODEL_NAMES)


def _user_model_names(folder: Path) -> list[str]:
    """Models added through the Cellpose GUI: listed one per line in gui_models.txt in the models folder."""
    listing = folder / "gui_models.txt"
    if not listing.is_file():
        return []
    return [line.strip() for line in listing.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]


def _missing_model_message(name: str, expected: Path) -> str:
    if name in _builtin_names():
        fetch = (
            f"On a machine with internet, download {MODEL_URL}{name} (or run `python -c \"from cellpose "
            f"import models; models.CellposeModel(pretrained_model='{name}')\"`, which saves it to "
            "~/.cellpose/models), then copy the file to "
        )
    else:
        fetch = "It is listed in gui_models.txt but its file is gone; copy it back to "
    return (
        f"Cellpose model {name!r} is not on this machine: {expected} does not exist (models folder: "
        f"$CELLPOSE_LOCAL_MODELS_PATH, else ~/.cellpose/models). phenossl never downloads weights. "
        f"{fetch}{expected}, or pass its path as weights=..."
    )


def _looks_like_path(text: str) -> bool:
    return (
        os.sep in text
        or "/" in text
        or text.startswith((".", "~"))
        or text.lower().endswith(WEIGHT_SUFFIXES)
    )


def _is_dino(state: Mapping) -> bool:
    return "encoder.cls_token" in state or "module.encoder.cls_token" in state
