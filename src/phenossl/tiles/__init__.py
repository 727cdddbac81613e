"""Single-cell tiles: robust normalisation, extraction around nuclei, and the on-disk tile store."""

from phenossl.tiles.extract import TileCut, cut_tiles, nucleus_table
from phenossl.tiles.normalize import PercentileSampler, normalize_to_unit
from phenossl.tiles.store import TileStore, TileStoreWriter

__all__ = [
    "PercentileSampler",
    "TileCut",
    "TileStore",
    "TileStoreWriter",
    "cut_tiles",
    "normalize_to_unit",
    "nucleus_table",
]
