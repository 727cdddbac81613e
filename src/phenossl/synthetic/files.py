"""Files: ImageXpress-style TIFFs + CSVs (or an OME-Zarr HCS plate), reading them back, the bundled sample data,
and the command line (``phenossl synthetic OUT`` and ``python -m phenossl.synthetic --out OUT``, which share one argument definition:
:mod:`phenossl.synthetic_cli`)."""

from __future__ import annotations

import argparse
import importlib.resources
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from phenossl.atomic import atomic_write, check_can_write
from phenossl.errors import InputError, PhenosslError
from phenossl.synthetic.layout import CHANNELS
from phenossl.synthetic.plate import SyntheticPlate

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


def zarr_plate_path(folder: str | Path, plate: SyntheticPlate) -> Path:
    """``<folder>/<plate>.zarr``: where ``write_plate_ome_zarr`` puts the plate."""
    return Path(folder) / f"{plate.metadata['plate'].iloc[0]}.zarr"


def write_plate_ome_zarr(plate: SyntheticPlate, folder: str | Path, overwrite: bool = False) -> Path:
    """Write the plate as an OME-Zarr HCS plate ``<folder>/<plate>.zarr`` (wells -> fields, channels named in its
    omero metadata), with metadata.csv, ground_truth_cells.csv and the masks as TIFFs beside it.

    Nothing is written if any target exists and ``overwrite`` is False; the plate is written to a temporary
    folder first and moved into place, so an interrupted write leaves no half plate."""
    from phenossl.io.omezarr import write_plate as write_zarr

    folder = Path(folder)
    target = zarr_plate_path(folder, plate)
    masks = [mask_file(folder, key, kind) for key in plate.field_keys for kind in ("nuclei", "cells")]
    check_can_write(target, overwrite, folder=True)
    for path in [*masks, folder / METADATA_FILE, folder / CELLS_FILE]:
        check_can_write(path, overwrite)
    wells: dict[str, list[np.ndarray]] = {}
    for index, row in enumerate(plate.metadata.itertuples()):
        wells.setdefault(str(row.well), []).append(plate.images[index])
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{target.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    write_zarr(partial, wells, list(plate.channel_names), name=str(plate.metadata["plate"].iloc[0]))
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    for index, key in enumerate(plate.field_keys):
        write_tiff(mask_file(folder, key, "nuclei"), plate.nuclei[index], overwrite)
        write_tiff(mask_file(folder, key, "cells"), plate.cell_masks[index], overwrite)
    write_csv(folder / METADATA_FILE, plate.metadata[METADATA_COLUMNS], overwrite)
    write_csv(folder / CELLS_FILE, plate.cells, overwrite)
    return target


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
    from phenossl.synthetic_cli import add_plate_arguments, write_from_arguments

    parser = argparse.ArgumentParser(prog="python -m phenossl.synthetic", description=main.__doc__)
    parser.add_argument("--out", required=True, type=Path, help="folder to write the plate into")
    add_plate_arguments(parser)
    args = parser.parse_args(argv)
    try:
        message = write_from_arguments(args, args.out)
    except PhenosslError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(message)
    return 0
