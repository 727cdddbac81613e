"""The options of ``phenossl synthetic OUT`` and ``python -m phenossl.synthetic --out OUT``, defined once. Kept
out of :mod:`phenossl.synthetic` so that building the ``phenossl`` command line does not import the generator."""

from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("tiff", "ome-zarr")


def add_plate_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a synthetic plate (everything but where it goes), shared by ``phenossl synthetic`` and
    ``python -m phenossl.synthetic``."""
    parser.add_argument("--format", choices=FORMATS, default="tiff",
                        help="tiff (default): one TIFF per channel per field, ImageXpress names "
                        "(<plate>_<well>_s<site>_w<n>.tif); ome-zarr: an OME-Zarr HCS plate <plate>.zarr")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wells-per-condition", type=int, help="replicate wells per treatment x density")
    parser.add_argument("--sites-per-well", type=int, help="fields per well")
    parser.add_argument("--field-size", type=int, help="field width and height, px")
    parser.add_argument("--overwrite", action="store_true", help="replace files that already exist")


def write_from_arguments(args: argparse.Namespace, out: str | Path) -> str:
    """Make and write the plate ``args`` describe into ``out``; the sentence saying what was written.
    PhenosslError for settings or targets that cannot be used."""
    from phenossl.synthetic.files import write_plate, write_plate_ome_zarr
    from phenossl.synthetic.plate import make_synthetic_plate

    options = {
        name: value
        for name in ("wells_per_condition", "sites_per_well", "field_size")
        if (value := getattr(args, name)) is not None
    }
    plate = make_synthetic_plate(args.seed, **options)
    if args.format == "ome-zarr":
        where = write_plate_ome_zarr(plate, out, overwrite=args.overwrite)
        return (f"wrote {len(plate.field_keys)} fields, {len(plate.cells)} cells as the OME-Zarr plate {where} "
                "(with metadata.csv beside it)")
    write_plate(plate, out, overwrite=args.overwrite)
    return f"wrote {len(plate.field_keys)} fields, {len(plate.cells)} cells to {out}"
