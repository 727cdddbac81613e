"""npe2 reader and sample data: plate folders and TIFF files read by the core, shown one layer per channel.

The reader accepts what ``phenossl.io.discover_fields`` accepts: a folder of per-channel TIFFs
(ImageXpress ``<plate>_<well>_s<site>_w<n>.tif``, BBBC021 names), a list of such files, or
multichannel TIFFs (one field each). A ``metadata.csv`` beside the images is joined to the fields
when it matches them (treatments then travel to every cell and into the exported CSV).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from phenossl.errors import InputError, PhenosslError
from phenossl.napari.plate import padding_note, plate_layer_data

logger = logging.getLogger(__name__)

METADATA_NAME = "metadata.csv"
SAMPLE_CHANNELS = {"w1": "DNA", "w2": "tubulin", "w3": "actin"}

LayerData = list[tuple[Any, dict[str, Any], str]]


def napari_get_reader(path: str | Sequence[str]) -> Callable[[str | Sequence[str]], LayerData] | None:
    """Claim folders holding TIFFs and TIFF files; anything else is left to other readers."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        return None
    from phenossl.io import list_image_files

    try:
        if not list_image_files(paths):
            return None
    except PhenosslError:
        return None  # not TIFFs, or missing: not ours
    return read_plate


def read_plate(path: str | Sequence[str]) -> LayerData:
    """All fields found in ``path`` as one (F, Y, X) Image layer per channel."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return plate_layers(paths)


def plate_layers(
    paths: Sequence[str | os.PathLike], channel_names: Mapping[str, str] | None = None
) -> LayerData:
    from phenossl.io import discover_fields, field_table, read_field

    sources = discover_fields(paths, channel_names=channel_names)
    fields = [read_field(source) for source in sources]
    metadata_path = _metadata_beside(paths)
    table = field_table(sources)
    if metadata_path is not None:
        table = _join_treatments(table, metadata_path)
        if table is None:
            metadata_path = None
            table = field_table(sources)
        else:  # the treatment table is the authority on plate names (a folder name is only a guess)
            for fld, plate in zip(fields, table["plate"], strict=True):
                fld.plate = None if plate is None else str(plate)
    layers = plate_layer_data(
        fields,
        source_paths=paths,
        channel_map=channel_names,
        metadata_path=metadata_path,
        field_table=table,
    )
    note = padding_note([fld.image.shape[1:] for fld in fields])
    if note:
        from napari.utils.notifications import show_warning

        show_warning(note)
    return layers


def sample_plate() -> LayerData:
    """The bundled synthetic plate: 8 fields, DNA / tubulin / actin, 4 treatments at 2 densities."""
    from phenossl.synthetic import sample_data_path

    return plate_layers([sample_data_path()], channel_names=SAMPLE_CHANNELS)


def _metadata_beside(paths: Sequence[str | os.PathLike]) -> Path | None:
    folders = {Path(p) if Path(p).is_dir() else Path(p).parent for p in paths}
    if len(folders) != 1:
        return None
    candidate = folders.pop() / METADATA_NAME
    return candidate if candidate.is_file() else None


def _join_treatments(table, metadata_path: Path):
    """The per-field table with the treatment columns, or None when the CSV does not match the fields."""
    from phenossl.io import join_metadata

    try:
        return join_metadata(table, metadata_path)
    except (InputError, PhenosslError) as exc:
        logger.warning("%s was not joined to the fields: %s", metadata_path, exc)
        return None
