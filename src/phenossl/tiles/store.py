"""The on-disk tile store: every single-cell tile of a run in one memory-mapped array.

100k cells x 3 channels x 196 x 196 never need to fit in RAM: tiles are written once, in order, into
``tiles.npy`` (float16, normalised intensities) and read back through ``numpy.memmap``. The per-cell
table and the normalisation that produced the tiles are stored beside them, so a store is
self-describing and can be reopened by another process (the CLI, the napari plugin, a notebook).

A store is built in ``<path>.partial`` and renamed into place only when complete: an interrupted
build never leaves a store that looks valid.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from phenossl.atomic import atomic_write, atomic_write_text, check_can_write
from phenossl.errors import InputError

TILES_FILE = "tiles.npy"
MASKS_FILE = "masks.npy"  # (N, S, S) uint8: each tile's central nucleus (1) — what CellProfiler measures
CELLS_FILE = "cells.csv"
INFO_FILE = "store.yaml"
LABELS_DIR = "labels"
TILE_DTYPE = np.float16


class TileStoreWriter:
    """Write a store of a known number of tiles, chunk by chunk."""

    def __init__(
        self,
        path: str | Path,
        n_cells: int,
        channel_names: list[str],
        tile_size: int,
        overwrite: bool = False,
    ):
        self.path = check_can_write(path, overwrite, folder=True)
        self.partial = self.path.with_name(self.path.name + ".partial")
        if self.partial.exists():
            shutil.rmtree(self.partial)  # left over by an interrupted build: never valid
        self.partial.mkdir(parents=True)
        self.channel_names = list(channel_names)
        self.tile_size = tile_size
        self.n_cells = n_cells
        shape = (n_cells, len(channel_names), tile_size, tile_size)
        self._tiles = np.lib.format.open_memmap(
            self.partial / TILES_FILE, mode="w+", dtype=TILE_DTYPE, shape=shape
        )
        self._masks: np.ndarray | None = None
        self._cursor = 0

    def append(self, tiles: np.ndarray, masks: np.ndarray | None = None) -> None:
        """Append normalised tiles (n, C, S, S), stored as float16, and their central-nucleus masks
        (n, S, S) when known: every append of a store gives masks, or none does."""
        n = len(tiles)
        if self._cursor + n > self.n_cells:
            raise InputError(f"more tiles than announced ({self._cursor + n} > {self.n_cells})")
        if (masks is None) != (self._masks is None) and (self._cursor > 0 or masks is None):
            raise InputError("nucleus masks must be given with every batch of tiles or with none")
        if masks is not None:
            if masks.shape != (n, self.tile_size, self.tile_size):
                raise InputError(f"masks of shape {masks.shape} do not match {n} tiles of {self.tile_size} px")
            if self._masks is None:
                self._masks = np.lib.format.open_memmap(
                    self.partial / MASKS_FILE, mode="w+", dtype=np.uint8,
                    shape=(self.n_cells, self.tile_size, self.tile_size))
            self._masks[self._cursor : self._cursor + n] = masks
        self._tiles[self._cursor : self._cursor + n] = tiles
        self._cursor += n

    def save_labels(self, key: str, labels: np.ndarray) -> None:
        """Keep a field's nuclei label image, so clusters can be painted back onto it later."""
        path = _labels_path(self.partial, key)
        path.parent.mkdir(parents=True, exist_ok=True)  # keys of same-named fields on two plates: "P1/A01_s1"
        np.savez_compressed(path, labels=labels)

    def finish(self, cells: pd.DataFrame, info: dict[str, Any]) -> TileStore:
        """Write the cell table and description, then move the complete store into place."""
        if self._cursor != self.n_cells or len(cells) != self.n_cells:
            raise InputError(
                f"store incomplete: {self._cursor} tiles written, {len(cells)} table rows, "
                f"{self.n_cells} announced"
            )
        self._tiles.flush()
        del self._tiles
        if self._masks is not None:
            self._masks.flush()
            self._masks = None
        cells = cells.reset_index(drop=True)
        if "cell_id" not in cells.columns:
            cells.insert(0, "cell_id", np.arange(len(cells)))
        atomic_write(self.partial / CELLS_FILE, lambda tmp: cells.to_csv(tmp, index=False))
        full_info = {
            "n_cells": self.n_cells,
            "channel_names": self.channel_names,
            "tile_size": self.tile_size,
            "dtype": np.dtype(TILE_DTYPE).name,
            **info,
        }
        atomic_write_text(self.partial / INFO_FILE, yaml.safe_dump(_plain(full_info), sort_keys=False))
        if self.path.exists():  # overwrite was allowed: swap in the new store, then drop the old one
            old = self.path.with_name(self.path.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            self.path.rename(old)
            self.partial.rename(self.path)
            shutil.rmtree(old)
        else:
            self.partial.rename(self.path)
        return TileStore(self.path)

    def abort(self) -> None:
        """Remove the partial store (after an error or a cancel)."""
        if hasattr(self, "_tiles"):
            del self._tiles
        self._masks = None
        shutil.rmtree(self.partial, ignore_errors=True)


class TileStore:
    """A finished tile store, opened read-only (tiles are memory-mapped, not loaded)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / INFO_FILE).is_file():
            raise InputError(
                f"{self.path} is not a phenossl tile store (no {INFO_FILE}); build one with "
                "'phenossl tile' or 'phenossl import-crops'"
            )
        try:
            self.info: dict[str, Any] = yaml.safe_load((self.path / INFO_FILE).read_text())
            self.tiles: np.ndarray = np.load(self.path / TILES_FILE, mmap_mode="r")
            self.cells: pd.DataFrame = pd.read_csv(self.path / CELLS_FILE)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise InputError(f"tile store {self.path} is damaged or incomplete: {exc}") from exc
        expected = (self.info["n_cells"], len(self.info["channel_names"]), self.tile_size, self.tile_size)
        if self.tiles.shape != expected or len(self.cells) != self.info["n_cells"]:
            raise InputError(
                f"tile store {self.path} is inconsistent: tiles {self.tiles.shape}, "
                f"{len(self.cells)} table rows, description says {expected}"
            )

    @property
    def n_cells(self) -> int:
        return int(self.info["n_cells"])

    @property
    def nucleus_diameter(self) -> float | None:
        """Median equivalent diameter (px) of the tiles' nuclei: from the nucleus areas of a plate's cells,
        else from the central-nucleus masks (up to 2,000 of them); None when neither is known."""
        if "_nucleus_diameter" not in self.__dict__:
            areas = None
            if "area" in self.cells.columns:
                areas = pd.to_numeric(self.cells["area"], errors="coerce").dropna().to_numpy()
            elif self.masks is not None:
                step = max(1, self.n_cells // 2000)
                areas = np.asarray(self.masks[::step], dtype=bool).reshape(-1, self.tile_size ** 2).sum(axis=1)
            areas = None if areas is None else areas[areas > 0]
            self.__dict__["_nucleus_diameter"] = (
                float(2 * np.sqrt(np.median(areas) / np.pi)) if areas is not None and areas.size else None)
        return self.__dict__["_nucleus_diameter"]

    @property
    def masks(self) -> np.ndarray | None:
        """(N, S, S) uint8 memory-mapped masks of each tile's central nucleus, or None (a store made before
        phenossl kept them; :func:`phenossl.measure.nucleus_masks` then derives them)."""
        path = self.path / MASKS_FILE
        if not path.is_file():
            return None
        try:
            masks = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise InputError(f"the nucleus masks of tile store {self.path} are damaged ({exc}); rebuild the "
                             "store with 'phenossl tile --overwrite'") from exc
        if masks.shape != (self.n_cells, self.tile_size, self.tile_size):
            raise InputError(f"the nucleus masks of tile store {self.path} have shape {masks.shape}, not "
                             f"{(self.n_cells, self.tile_size, self.tile_size)}; rebuild the store")
        return masks

    @property
    def channel_names(self) -> list[str]:
        return list(self.info["channel_names"])

    @property
    def tile_size(self) -> int:
        return int(self.info["tile_size"])

    @property
    def intensity_percentiles(self) -> np.ndarray | None:
        """(C, 2) [low, high] raw intensities mapped to [0, 1], when the store was built from raw images."""
        value = self.info.get("normalization", {}).get("lo_hi")
        return None if value is None else np.asarray(value, dtype=np.float64)

    def labels(self, field_key: str) -> np.ndarray | None:
        """The nuclei label image of one field, if it was kept."""
        path = _labels_path(self.path, field_key)
        if not path.is_file():
            return None
        with np.load(path) as data:
            return data["labels"]

    def field_keys(self) -> list[str]:
        folder = self.path / LABELS_DIR
        if not folder.is_dir():
            return []
        return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.npz"))

    def __len__(self) -> int:
        return self.n_cells

    def __repr__(self) -> str:
        return f"TileStore({str(self.path)!r}, n_cells={self.n_cells}, channels={self.channel_names})"


def _labels_path(store: Path, field_key: str) -> Path:
    """Where a field's labels live; a key may hold one '/' (plate/field), never a way out of the store."""
    parts = Path(field_key).parts
    if not parts or any(part in ("", ".", "..") for part in parts) or Path(field_key).is_absolute():
        raise InputError(f"field key {field_key!r} cannot name a labels file")
    return store / LABELS_DIR / f"{field_key}.npz"


def _plain(value: Any) -> Any:
    """Turn numpy scalars/arrays into plain Python so YAML stays readable and portable."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
