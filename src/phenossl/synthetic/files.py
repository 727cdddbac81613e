"""Files: ImageXpress-style TIFFs + CSVs, reading them back, the bundled sample data, and the command line
(``python -m phenossl.synthetic``)."""

from __future__ import annotations

import argparse
import importlib.resources
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from phenossl.atomic import atomic_write, check_can_write
from phenossl.errors import InputError, PhenosslError
from phenossl.synthetic.layout import CHANNELS
from phenossl.synthetic.plate import SyntheticPlate, make_synthetic_plate

METADATA_FILE = "metadata.csv"
CELLS_FILE = "ground_truth_cells.csv"
METADATA_COLUMNS = ["plate", "well", "site", "compound", "concentration", "density_condition"]


def channel_file(folder: Path, key: str, channel: int) -> Path:
    """``<plate>_<well>_s<site>_w<n>.tif`` with n = 1 (DNA), 2 (tubulin), 3 (actin)."""
    return folder / f"{key}_w{channel + 1}.tif"


def mask_file(folder: Path, key: str, kind: str) -> Path:
    """Ground-truth labels: ``masks/<key>_nuclei.tif`` and ``masks/<key>_cells.tif``."""
    return folder / "masks" / f"{key}_{kind}.tif"


def plate_files(folder: Path, keys: Sequence[str], n_channels: int) -> list[Path]:
    """Every file ``write_plate`` writes, so that all can be checked before any is written."""
    images = [channel_file(folder, key, c) for key in keys for c in range(n_channels)]
    masks = [mask_file(folder, key, kind) for key in keys for kind in ("nuclei", "cells")]
    return [*images, *masks, folder / METADATA_FILE, folder / CELLS_FILE]


def write_tiff(path: Path, array: np.ndarray, overwrite: bool) -> None:
    """zlib-compressed single-page TIFF, no timestamps or descriptions: same array, same bytes."""
    import tifffile

    atomic_write(
        path,
        lambda tmp: tifffile.imwrite(
            tmp,
            array,
            compression="zlib",
            compressionargs={"level": 6},
            photometric="minisblack",
            metadata=None,
        ),
        overwrite=overwrite,
    )


def write_csv(path: Path, table: pd.DataFrame, overwrite: bool) -> None:
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False, lineterminator="\n"), overwrite=overwrite)


def write_plate(plate: SyntheticPlate, folder: str | Path, overwrite: bool = False) -> Path:
    """Write one TIFF per channel per field, ground-truth masks, metadata.csv and ground_truth_cells.csv.

    Nothing is written if any target exists and ``overwrite`` is False.
    """
    folder = Path(folder)
    for path in plate_files(folder, plate.field_keys, len(plate.channel_names)):
        check_can_write(path, overwrite)
    for index, key in enumerate(plate.field_keys):
        for channel in range(len(plate.channel_names)):
            write_tiff(channel_file(folder, key, channel), plate.images[index, channel], overwrite)
        write_tiff(mask_file(folder, key, "nuclei"), plate.nuclei[index], overwrite)
        write_tiff(mask_file(folder, key, "cells"), plate.cell_masks[index], overwrite)
    write_csv(folder / METADATA_FILE, plate.metadata[METADATA_COLUMNS], overwrite)
    write_csv(folder / CELLS_FILE, plate.cells, overwrite)
    return folder


def read_tiff(path: Path) -> np.ndarray:
    import tifffile

    if not path.is_file():
        raise InputError(
            f"{path} is missing: the synthetic plate folder is incomplete. Regenerate it with "
            "`python -m phenossl.synthetic --out FOLDER --seed 0 --overwrite`."
        )
    return tifffile.imread(path)


def load_plate(folder: str | Path) -> SyntheticPlate:
    """Read a folder written by ``write_plate`` back into a SyntheticPlate."""
    folder = Path(folder)
    if not (folder / METADATA_FILE).is_file() or not (folder / CELLS_FILE).is_file():
        raise InputError(f"{folder} has no {METADATA_FILE} / {CELLS_FILE}; is it a synthetic plate folder?")
    metadata = pd.read_csv(folder / METADATA_FILE)
    metadata.insert(0, "field", [f"{r.plate}_{r.well}_s{r.site}" for r in metadata.itertuples()])
    keys = list(metadata["field"])
    return SyntheticPlate(
        images=np.stack(
            [np.stack([read_tiff(channel_file(folder, k, c)) for c in range(len(CHANNELS))]) for k in keys]
        ),
        nuclei=np.stack([read_tiff(mask_file(folder, k, "nuclei")) for k in keys]),
        cell_masks=np.stack([read_tiff(mask_file(folder, k, "cells")) for k in keys]),
        metadata=metadata,
        cells=pd.read_csv(folder / CELLS_FILE),
    )


def sample_data_path() -> Path:
    """The bundled synthetic plate folder (``phenossl/sample_data/plate``), found through the package."""
    path = Path(str(importlib.resources.files("phenossl").joinpath("sample_data", "plate")))
    if not (path / METADATA_FILE).is_file():
        raise InputError(
            f"The bundled sample plate is missing from {path}. Regenerate it with "
            f"`python -m phenossl.synthetic --out {path} --seed 0`."
        )
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Write a synthetic plate: ``python -m phenossl.synthetic --out FOLDER --seed 0`` (the sample data)."""
    parser = argparse.ArgumentParser(prog="python -m phenossl.synthetic", description=main.__doc__)
    parser.add_argument("--out", required=True, type=Path, help="folder to write the plate into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wells-per-condition", type=int, help="replicate wells per treatment x density")
    parser.add_argument("--sites-per-well", type=int, help="fields per well")
    parser.add_argument("--field-size", type=int, help="field width and height, px")
    parser.add_argument("--overwrite", action="store_true", help="replace files that already exist")
    args = parser.parse_args(argv)
    options = {
        name: value
        for name in ("wells_per_condition", "sites_per_well", "field_size")
        if (value := getattr(args, name)) is not None
    }
    try:
        plate = make_synthetic_plate(args.seed, **options)
        write_plate(plate, args.out, overwrite=args.overwrite)
    except PhenosslError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {len(plate.field_keys)} fields, {len(plate.cells)} cells to {args.out}")
    return 0
