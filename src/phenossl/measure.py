"""CellProfiler measurements of every cell (cp_measure): the representation that needs no training.

Before trusting a trained encoder, a biologist should see whether it beats simply measuring the cells.
Each tile's central nucleus (the tile store's mask) is measured on every channel with CellProfiler's own
measurement code, packaged without its GUI as ``cp_measure``: size and shape, Zernike moments, intensity,
radial distribution, texture (Haralick), granularity and channel correlations (about 600 features for three
channels). The feature matrix is then made fit for clustering: features that say where the cell sits in its
tile (location, bounding box, orientation) are dropped, features missing for more than 5 % of the cells are
dropped and the rest imputed with the median, constant features are dropped, and each feature is z-scored.

cp_measure reads images as CellProfiler does, scaled to [0, 1]: the store's normalised tiles are clipped there
(the 0.5 % brightest pixels of the set saturate, as in an 8-bit export). Measuring is CPU work, about
0.07 s per 68 px cell and core; cells are measured in chunks, in worker processes when asked, with progress
and cancel between chunks.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from phenossl.errors import Cancelled, InputError

OBJECT = "nucleus"
#: where the cell sits in its tile, not what it is: dropped from the representation
POSITION_PREFIXES = ("Location_", "Center_", "BoundingBoxMinimum", "BoundingBoxMaximum", "Orientation")
MAX_MISSING = 0.05  # a feature missing (NaN) for more cells than this is dropped, else imputed
CHUNK = 64  # cells per task: progress and cancel between chunks
COSTES_SCALE = 255  # Costes' threshold search in 256 steps of the [0, 1] range (CellProfiler's "fast" mode)

Progress = Callable[[str, int, int], None]


def featurizer_config(channel_names: Sequence[str]) -> dict:
    """cp_measure's configuration: every CellProfiler measurement of one object type, the nucleus."""
    from cp_measure.featurizer import make_featurizer_config

    return make_featurizer_config(list(channel_names), objects=[OBJECT],
                                  correlation_costes_params={"scale_max": COSTES_SCALE})


def feature_names(channel_names: Sequence[str]) -> list[str]:
    """The names of the columns cp_measure returns for these channels (measured once on a small disc)."""
    size = 33
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size // 2) ** 2 + (xx - size // 2) ** 2 <= 100).astype(np.int32)
    rng = np.random.default_rng(0)
    image = rng.random((1, len(channel_names), size, size)) * 0.5 + 0.25
    return _featurize(image, disc[None, None], channel_names)[1]


def _featurize(images: np.ndarray, masks: np.ndarray, channel_names: Sequence[str]):
    from cp_measure.featurizer import featurize

    with warnings.catch_warnings():  # cp_measure warns about empty masks and degenerate objects per cell
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            return featurize(images, masks, featurizer_config(channel_names), image_ids=list(range(len(images))))


def measure_tiles(tiles: np.ndarray, masks: np.ndarray, channel_names: Sequence[str],
                  names: Sequence[str] | None = None) -> np.ndarray:
    """(n, F) float64 measurements of the central nucleus of each tile (n, C, S, S) with mask (n, S, S);
    a row of NaN where the mask is empty (no nucleus was found there). Columns follow ``names``."""
    names = list(names) if names is not None else feature_names(channel_names)
    out = np.full((len(tiles), len(names)), np.nan)
    present = np.flatnonzero(np.asarray(masks).reshape(len(masks), -1).any(axis=1))
    if present.size == 0:
        return out
    images = np.clip(np.asarray(tiles[present], dtype=np.float64), 0.0, 1.0)
    labels = (np.asarray(masks[present]) > 0).astype(np.int32)[:, None]
    data, columns, rows = _featurize(images, labels, channel_names)
    if list(columns) != names:
        raise InputError("cp_measure returned other features than expected; check the installed cp_measure version")
    for values, (image_id, _object, _label) in zip(data, rows):
        out[present[int(image_id)]] = values
    return out


def _measure_chunk(args: tuple) -> tuple[int, np.ndarray]:
    start, tiles, masks, channel_names, names = args
    return start, measure_tiles(tiles, masks, channel_names, names)


@dataclass
class Measurements:
    """Raw per-cell measurements (n, F) and their names; ``features()`` makes them a clustering space."""

    values: np.ndarray
    names: list[str]
    report: dict[str, Any] = field(default_factory=dict)

    def features(self) -> tuple[np.ndarray, list[str], dict[str, Any]]:
        return feature_matrix(self.values, self.names)


def measure_store(store, *, workers: int = 1, progress: Progress | None = None,
                  cancel: threading.Event | None = None, chunk: int = CHUNK) -> Measurements:
    """Measure every cell of a tile store (its tiles and central-nucleus masks), ``workers`` processes."""
    masks = nucleus_masks(store)
    channel_names = store.channel_names
    names = feature_names(channel_names)
    n = store.n_cells
    values = np.empty((n, len(names)), dtype=np.float64)
    tasks = ((start, np.asarray(store.tiles[start : start + chunk]), np.asarray(masks[start : start + chunk]),
              channel_names, names) for start in range(0, n, chunk))
    done = 0

    def collect(start: int, block: np.ndarray) -> None:
        nonlocal done
        values[start : start + len(block)] = block
        done += len(block)
        if progress:
            progress("measuring", done, n)

    if workers <= 1:
        for task in tasks:
            _check_cancel(cancel)
            collect(*_measure_chunk(task))
    else:
        with ProcessPoolExecutor(workers) as pool:
            pending = set()
            for task in tasks:  # at most 2 chunks per worker in flight: memory stays bounded
                _check_cancel(cancel, pool)
                pending.add(pool.submit(_measure_chunk, task))
                if len(pending) >= 2 * workers:
                    finished = next(iter(_first_done(pending)))
                    pending.remove(finished)
                    collect(*finished.result())
            for future in list(pending):
                _check_cancel(cancel, pool)
                collect(*future.result())
    empty = int(np.isnan(values).all(axis=1).sum())
    return Measurements(values, names, {"n_cells": n, "cells_without_nucleus": empty, "n_measured": len(names)})


def _first_done(pending):
    from concurrent.futures import FIRST_COMPLETED, wait

    return wait(pending, return_when=FIRST_COMPLETED).done


def _check_cancel(cancel: threading.Event | None, pool: ProcessPoolExecutor | None = None) -> None:
    if cancel is not None and cancel.is_set():
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        raise Cancelled("Measuring cancelled; nothing was written.")


def feature_matrix(values: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """The measurements as a clustering space: position features dropped, features missing for more than
    MAX_MISSING of the cells dropped (the rest imputed with their median), constant ones dropped, each
    feature z-scored. Returns (float32 features, their names, what was dropped)."""
    values = np.asarray(values, dtype=np.float64)
    values = np.where(np.isfinite(values), values, np.nan)
    names = list(names)
    position = np.array([name.startswith(POSITION_PREFIXES) for name in names])
    missing = np.isnan(values).mean(axis=0) if len(values) else np.zeros(len(names))
    keep = ~position & (missing <= MAX_MISSING)
    kept = values[:, keep]
    median = np.nanmedian(kept, axis=0) if len(kept) else np.zeros(kept.shape[1])
    kept = np.where(np.isnan(kept), np.nan_to_num(median), kept)
    std = kept.std(axis=0)
    varying = std > 1e-12 * np.maximum(1.0, np.abs(kept.mean(axis=0)))
    kept_names = [n for n, k in zip(np.array(names)[keep], varying) if k]
    if not kept_names:
        raise InputError("No CellProfiler feature varies between these cells (are the nucleus masks empty?).")
    kept = kept[:, varying]
    features = ((kept - kept.mean(axis=0)) / kept.std(axis=0)).astype(np.float32)
    report = {"measured": len(names), "kept": len(kept_names), "dropped_position": int(position.sum()),
              "dropped_missing": int((~position & (missing > MAX_MISSING)).sum()),
              "dropped_constant": int((~varying).sum()),
              "imputed_values": int(np.isnan(values[:, keep][:, varying]).sum())}
    return features, kept_names, report


def nucleus_masks(store) -> np.ndarray:
    """Each tile's central-nucleus mask: the store's own (masks.npy), else derived for a store built before
    phenossl kept them (from the fields' labels for plates, by segmenting each crop for pre-cropped cells)."""
    masks = store.masks
    if masks is not None:
        return masks
    cells = store.cells
    if store.info.get("source") == "fields" and store.field_keys():
        from phenossl.tiles.extract import cut_tiles

        out = np.zeros((store.n_cells, store.tile_size, store.tile_size), dtype=bool)
        for key, rows in cells.groupby("field").indices.items():
            labels = store.labels(str(key))
            if labels is None:
                continue
            table = cells.iloc[rows][["label", "centroid_y", "centroid_x"]].reset_index(drop=True)
            blank = np.zeros((1, *labels.shape), dtype=np.float32)
            out[rows] = cut_tiles(blank, table, size=store.tile_size, border="pad", labels=labels).masks
        return out
    from phenossl.tiles.build import central_nucleus_masks, nuclear_channel_index

    nuclear = nuclear_channel_index(store.channel_names, store.info.get("nuclear_channel", 0))
    return np.concatenate([central_nucleus_masks(np.asarray(store.tiles[s : s + 512, nuclear], dtype=np.float32))
                           for s in range(0, store.n_cells, 512)]) if store.n_cells else np.zeros((0, 1, 1), bool)
