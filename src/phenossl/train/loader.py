"""Shuffled batches of tiles from a memory-mapped store, delivered on the training device.

The GPU must not wait for data: when the whole store fits comfortably in device memory it is copied
there once and batches are gathered on the device; otherwise batches are read from the memmap in a
background thread (sorted indices, so reads are mostly sequential), pinned, and copied asynchronously.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from phenossl.errors import TooFewCellsError

#: Keep the device cache below this fraction of the device's free memory (the model needs the rest).
DEVICE_CACHE_FRACTION = 0.4


class TileBatches:
    """Epochs of shuffled tile batches; the order depends only on (seed, epoch), so resuming is exact.

    With ``targets`` (one value per cell, NaN where unknown: a labelled method's label) only the cells with a
    known target are batched, and :meth:`batches` gives each batch's targets with it.

    Under torchrun (``world_size`` > 1) ``batch_size`` is the global batch: every rank draws the same permutation
    and takes its own contiguous ``batch_size / world_size`` cells of each batch, so the ranks together see exactly
    the batches one process would.
    """

    def __init__(self, tiles: np.ndarray, batch_size: int, device, seed: int = 0, cache_on_device: str = "auto",
                 pin_memory: bool | None = None, targets: np.ndarray | None = None, rank: int = 0,
                 world_size: int = 1):
        """``pin_memory``: stage streamed batches in page-locked memory for asynchronous copies (default: when
        streaming to a CUDA device; off only to measure what pinning buys)."""
        import torch

        self.cells = None if targets is None else np.flatnonzero(np.isfinite(targets))
        n = len(tiles) if self.cells is None else len(self.cells)
        if n < 2:
            what = "the store has" if self.cells is None else "cells with a known label:"
            raise TooFewCellsError(f"training needs at least 2 cells, {what} {n}")
        self.tiles = tiles
        self.n_train = n
        self.batch_size = min(batch_size, n)
        self.rank, self.world_size = rank, world_size
        if self.batch_size % world_size or self.batch_size // world_size < 2:
            raise TooFewCellsError(
                f"train.batch_size {self.batch_size} cannot be split over {world_size} processes: it is the global "
                f"batch, and each process needs an equal share of at least 2 cells; use a multiple of {world_size} "
                f"of at least {2 * world_size}")
        self.device = torch.device(device)
        self.seed = seed
        self.pin_memory = self.device.type == "cuda" if pin_memory is None else bool(pin_memory)
        self._targets = None if targets is None else torch.from_numpy(np.asarray(targets, np.float32)).to(self.device)
        self._cache = self._device_cache(cache_on_device)

    @property
    def steps_per_epoch(self) -> int:
        return self.n_train // self.batch_size  # incomplete last batch dropped: BatchNorm needs full batches

    def _device_cache(self, mode: str):
        import torch

        if mode == "never" or self.device.type == "cpu":
            return None  # on the CPU the memmap's page cache already is the cache
        nbytes = self.tiles.size * self.tiles.itemsize
        if mode == "auto" and self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if nbytes > DEVICE_CACHE_FRACTION * free:
                return None
        elif mode == "auto":
            return None
        return self._copy_to_device()

    def _copy_to_device(self, chunk_bytes: int = 256 * 2**20):
        """The whole store on the device, copied in chunks of about ``chunk_bytes``: a read-only memmap is
        never wrapped as a (writable) tensor, and the host never holds a second copy of the store."""
        import torch

        cache = torch.empty(self.tiles.shape, dtype=torch.from_numpy(self.tiles[:0].copy()).dtype,
                            device=self.device)
        rows = max(1, chunk_bytes // max(1, self.tiles[0].size * self.tiles.itemsize))
        for start in range(0, len(self.tiles), rows):
            cache[start : start + rows] = torch.from_numpy(np.array(self.tiles[start : start + rows])).to(self.device)
        return cache

    def order(self, epoch: int) -> np.ndarray:
        """The permutation of cell indices used in ``epoch`` (of the labelled cells only, with targets)."""
        permutation = np.random.default_rng([self.seed, epoch]).permutation(self.n_train)
        return permutation if self.cells is None else self.cells[permutation]

    def epoch(self, epoch: int) -> Iterator:
        """Yield (B, C, S, S) float16 tensors on the device for one epoch."""
        for tiles, _ in self.batches(epoch):
            yield tiles

    def batches(self, epoch: int) -> Iterator:
        """Yield ``(tiles, targets)`` for one epoch: the tiles as :meth:`epoch` gives them, and their (B,)
        float32 targets on the device in the same order (None without targets)."""
        import torch

        order = self.order(epoch)
        share = self.batch_size // self.world_size
        batches = [order[i * self.batch_size + self.rank * share : i * self.batch_size + (self.rank + 1) * share]
                   for i in range(self.steps_per_epoch)]
        if self._cache is not None:
            for idx in batches:
                index = torch.from_numpy(idx).to(self.device, non_blocking=True)
                yield self._cache[index], self._targets_of(index)
            return
        pin = self.pin_memory
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="phenossl-loader") as pool:
            pending = pool.submit(self._read, batches[0], pin) if batches else None
            for i in range(len(batches)):
                host = pending.result()
                pending = pool.submit(self._read, batches[i + 1], pin) if i + 1 < len(batches) else None
                # _read gives the tiles in sorted order: their targets too
                yield host.to(self.device, non_blocking=pin), self._targets_of(np.sort(batches[i]))

    def _targets_of(self, index):
        """The targets of the cells ``index`` (a device tensor or a numpy array), or None."""
        import torch

        if self._targets is None:
            return None
        return self._targets[torch.as_tensor(index).to(self.device)]

    def _read(self, idx: np.ndarray, pin: bool):
        import torch

        rows = np.sort(idx)  # sequential reads from the memmap; the batch order itself doesn't matter
        host = torch.from_numpy(np.asarray(self.tiles[rows]))
        return host.pin_memory() if pin else host
