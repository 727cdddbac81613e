"""Embed every cell with a trained encoder: batched, no gradients, streamed to disk.

Embeddings are computed once per trained model and cached in ``embeddings.npy``; clustering,
UMAP and the napari views all read that file, so reclustering never re-embeds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from phenossl.atomic import atomic_path
from phenossl.config import TrainConfig
from phenossl.tiles.store import TileStore
from phenossl.train.checkpoint import load_checkpoint
from phenossl.train.devices import resolve_device

EMBEDDINGS_FILE = "embeddings.npy"


def load_trained_model(checkpoint: str | Path, device: str = "cpu"):
    """Rebuild the SSL model of a checkpoint and load its weights. Returns (model, TrainConfig)."""
    from phenossl.config import config_from_dict
    from phenossl.methods.build import build_model

    state = load_checkpoint(checkpoint, map_location="cpu")
    config = config_from_dict(state["train_config"], TrainConfig)
    model, _ = build_model(config, in_channels=int(state["in_channels"]), num_samples=int(state["num_samples"]),
                           tile_size=state.get("tile_size"))
    model.load_state_dict(state["model"])
    model.to(resolve_device(device)).eval()
    return model, config


def embedding_view(config: TrainConfig, view: str = "auto", average: str = "none") -> list[Callable]:
    """How a tile is shown to the encoder at embedding time (deterministic, training resolution): the views
    whose features are averaged (one unless ``average`` is d4 or rot-N)."""
    from phenossl.augment.pipeline import eval_views
    from phenossl.augment.specs import Composition

    composition = config.main_composition() if view == "auto" else Composition(name="full", transforms=[])
    return eval_views(composition, config.resolution, average)


def embed_tiles(
    model,
    tiles: np.ndarray,
    view: Callable | Sequence[Callable],
    *,
    batch_size: int = 256,
    out: np.ndarray | None = None,
    cancel=None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Encoder features (N, D) float32 of ``tiles`` (N, C, S, S), written into ``out`` if given; with several
    views, the mean of their features (each batch is read once and shown in every view). ``progress(done, n)``
    is called after every batch."""
    import torch

    from phenossl.errors import Cancelled

    views = [view] if callable(view) else list(view)
    device = next(model.parameters()).device
    model.eval()
    n = len(tiles)
    if progress is not None:
        progress(0, n)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            if cancel is not None and cancel.is_set():
                raise Cancelled("Embedding cancelled; the trained model is kept and can be embedded again.")
            chunk = np.array(tiles[start : start + batch_size])  # a copy: memmaps are read-only
            batch = torch.from_numpy(chunk).to(device).float()
            features = sum(model.embed(v(batch)).float() for v in views) / len(views)
            features = features.cpu().numpy()
            if out is None:
                out = np.empty((n, features.shape[1]), dtype=np.float32)
            out[start : start + len(features)] = features
            if progress is not None:
                progress(start + len(features), n)
    return out


def embed_store(
    store: TileStore,
    checkpoint: str | Path,
    out_path: str | Path,
    *,
    batch_size: int = 256,
    device: str = "auto",
    view: str = "auto",
    average: str = "none",
    overwrite: bool = True,
    cancel=None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Embed every tile of ``store`` with the checkpoint's encoder into ``out_path`` (.npy, atomic);
    ``progress(done, n_cells)`` after every batch.

    Returns the embeddings memory-mapped read-only from the written file (bounded memory).
    """
    from phenossl.errors import DeviceOutOfMemoryError
    from phenossl.train import distributed
    from phenossl.train.devices import is_out_of_memory

    device = str(distributed.start(resolve_device(device)))  # under torchrun: join the job, cuda:LOCAL_RANK
    model, config = load_trained_model(checkpoint, device=device)
    transform = embedding_view(config, view, average)
    try:
        if distributed.active():
            _embed_shared(store, model, transform, Path(out_path), batch_size, overwrite, cancel, progress)
            return np.load(out_path, mmap_mode="r")
        with atomic_path(out_path, overwrite=overwrite) as tmp:
            probe = embed_tiles(model, store.tiles[:1], transform)
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                            shape=(store.n_cells, probe.shape[1]))
            embed_tiles(model, store.tiles, transform, batch_size=batch_size, out=out, cancel=cancel,
                        progress=progress)
            out.flush()
            del out
    except Exception as exc:
        if is_out_of_memory(exc):
            raise DeviceOutOfMemoryError(
                f"The device ran out of memory embedding {batch_size} cells at a time. The trained model is kept "
                f"({checkpoint}); embed again with a smaller batch (embed.batch_size: {max(1, batch_size // 2)})."
            ) from exc
        raise
    finally:
        del model
        _release_device_memory()
    return np.load(out_path, mmap_mode="r")


def _embed_shared(store: TileStore, model, transform, out_path: Path, batch_size: int, overwrite: bool, cancel,
                  progress) -> None:
    """Under torchrun: rank 0 creates the (temporary) .npy, every rank writes its own contiguous rows into it
    (shared storage, bounded memory: nothing is gathered), and rank 0 puts it in place once all are done."""
    from phenossl.train import distributed

    width = embed_tiles(model, store.tiles[:1], transform).shape[1]
    rows = distributed.shard(store.n_cells)
    main = distributed.is_main_process()
    with atomic_path(out_path, overwrite=overwrite) if main else contextlib.nullcontext(None) as tmp:
        if main:
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(store.n_cells, width)).flush()
        tmp = distributed.broadcast_object(tmp)
        out = np.load(tmp, mmap_mode="r+")
        embed_tiles(model, store.tiles[rows], transform, batch_size=batch_size, out=out[rows], cancel=cancel,
                    progress=progress if main else None)
        out.flush()
        del out
        distributed.barrier()  # every rank's rows are on disk before rank 0 renames the file
    distributed.barrier()  # and the file is in place before any rank opens it


def _release_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
