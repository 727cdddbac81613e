"""npe2 reader and sample data: plate folders, image files, OME-Zarr plates and metadata CSVs, shown one layer
per channel.

The reader accepts what ``phenossl.io.discover_fields`` accepts: a folder of per-channel TIFFs
(ImageXpress ``<plate>_<well>_s<site>_w<n>.tif``, BBBC021 names), a list of such files,
multichannel TIFFs (one field each), microscope files (ND2, CZI, LIF: one field per scene; PNG / JPEG) and
OME-Zarr HCS plates (a ``.zarr`` folder: one field per well image). Fields of microscope files and OME-Zarr plates
are dask arrays, read one field at a time as the field slider shows them.

It also opens a metadata CSV: the images it names (BBBC021's
``Image_FileName_DAPI`` columns, looked for beside the CSV and in its ``PathName`` folders), or, for a
table without file names, the TIFFs beside it.

Which metadata CSV is joined to a folder's fields: the one the user opened (or gave with the images);
otherwise the folder's CSVs that load and join its fields: the only one, else ``metadata.csv``, else the
one joining most fields (a notification names it and how to choose another). Treatments then travel to
every cell and into the exported CSV. Channels are named from a ``channel_names`` map, else from the
metadata's ``FileName_<channel>`` columns (``w1`` -> ``DAPI``), else by their file-name tokens.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phenossl.errors import InputError, PhenosslError
from phenossl.napari.plate import padding_note, plate_layer_data

logger = logging.getLogger(__name__)

METADATA_NAME = "metadata.csv"
METADATA_SUFFIXES = (".csv", ".tsv", ".tab")
MAX_METADATA_BYTES = 200 * 2**20  # larger CSVs in a folder are per-cell exports, not a plate's treatments
SAMPLE_CHANNELS = {"w1": "DNA", "w2": "tubulin", "w3": "actin"}

LayerData = list[tuple[Any, dict[str, Any], str]]


def napari_get_reader(path: str | Sequence[str]) -> Callable[[str | Sequence[str]], LayerData] | None:
    """Claim folders holding images, image files, OME-Zarr plates, and metadata CSVs that lead to images; leave
    the rest."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        return None
    tables = [p for p in paths if _is_table(p)]
    images = [p for p in paths if not _is_table(p)]
    if len(tables) > 1:
        return None
    try:
        if images:
            from phenossl.io import list_image_files

            if not list_image_files(images):
                return None
        else:
            found = _images_of_table(Path(tables[0]))
            if not (found.files or found.names_images):  # a table naming TIFFs is ours, found or not:
                return None  # reading it then says where they were looked for
    except PhenosslError:
        return None  # not TIFFs, not a metadata table, or missing: not ours
    return read_plate


def read_plate(path: str | Sequence[str]) -> LayerData:
    """All fields found in ``path`` as one (F, Y, X) Image layer per channel (a CSV among the paths is the
    metadata to join; a CSV alone opens the images it names)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    tables = [p for p in paths if _is_table(p)]
    if len(tables) > 1:
        raise InputError(
            f"Several metadata tables were opened together ({', '.join(Path(t).name for t in tables)}); "
            "open the images with one of them."
        )
    images: Sequence[str | os.PathLike] = [p for p in paths if not _is_table(p)]
    metadata = Path(tables[0]) if tables else None
    if metadata is not None and not images:
        found = _images_of_table(metadata)
        if not found.files:
            raise InputError(found.problem)
        if found.problem:
            _warn(found.problem)
        images = found.files
    return plate_layers(images, metadata=metadata)


def plate_layers(
    paths: Sequence[str | os.PathLike],
    channel_names: Mapping[str, str] | None = None,
    *,
    metadata: str | os.PathLike | None = None,
) -> LayerData:
    """Layer data for the fields in ``paths``, joined to ``metadata`` (else to a CSV found beside them)."""
    from phenossl.io import discover_fields, field_table, read_field

    sources = discover_fields(paths, channel_names=channel_names)
    table = field_table(sources)
    if metadata is not None:
        joined = _join_treatments(table, Path(metadata), strict=True)
        choice = MetadataChoice(Path(metadata), joined)
    else:
        choice = choose_metadata(paths, table)
    if choice.note:
        _warn(choice.note)
    if choice.table is not None and channel_names is None:
        names = channel_map_from_metadata(sources, choice.table)
        if names:  # read again with the channels named: the run config then re-reads them the same way
            channel_names = names
            sources = discover_fields(paths, channel_names=names)
            table = _join_treatments(field_table(sources), choice.path, strict=True)
            choice = MetadataChoice(choice.path, table)
    table = choice.joined if choice.joined is not None else table
    fields = [read_field(source, lazy=True) for source in sources]
    if choice.joined is not None:  # the treatment table is the authority on plate names (a folder name is a guess)
        for fld, plate in zip(fields, table["plate"], strict=True):
            fld.plate = None if plate is None else str(plate)
    layers = plate_layer_data(
        fields,
        source_paths=paths,
        channel_map=channel_names,
        metadata_path=choice.path if choice.joined is not None else None,
        field_table=table,
    )
    note = padding_note([fld.image.shape[1:] for fld in fields])
    if note:
        _warn(note)
    _show_field_names()
    return layers


def sample_plate() -> LayerData:
    """The bundled synthetic plate: 8 fields, DNA / tubulin / actin, 4 treatments at 2 densities."""
    from phenossl.synthetic import sample_data_path

    return plate_layers([sample_data_path()], channel_names=SAMPLE_CHANNELS)


# --------------------------------------------------------------------------------------------------
# Which metadata table


@dataclass(frozen=True)
class MetadataChoice:
    """The metadata CSV used (or None), the fields' table joined to it, and a sentence for the user."""

    path: Path | None
    joined: Any = None  # pandas DataFrame: the per-field table with the treatment columns
    note: str | None = None

    @property
    def table(self):
        """The loaded metadata (with its header's spelling in ``attrs``), for channel names."""
        return None if self.joined is None else self.joined.attrs.get("metadata")


def choose_metadata(paths: Sequence[str | os.PathLike], table) -> MetadataChoice:
    """The CSV beside the images that describes them: the only one that joins the fields, else
    ``metadata.csv``, else the one joining most fields (the note names it and the others)."""
    from phenossl.io.omezarr import is_zarr

    folders = {Path(p) if Path(p).is_dir() and not is_zarr(Path(p)) else Path(p).parent for p in paths}
    if len(folders) != 1:
        return MetadataChoice(None)
    folder = folders.pop()
    candidates = sorted(
        (p for p in folder.iterdir() if _is_table(p) and p.is_file() and not p.name.startswith(".")),
        key=lambda p: (p.name != METADATA_NAME, p.name.lower()),
    )
    joined: list[tuple[Path, Any]] = []
    for candidate in candidates:
        if candidate.stat().st_size > MAX_METADATA_BYTES:
            logger.info("%s is over %d MB: not read as the plate's metadata", candidate, MAX_METADATA_BYTES >> 20)
            continue
        result = _join_treatments(table, candidate, strict=False)
        if result is not None:
            joined.append((candidate, result))
    if not joined:
        return MetadataChoice(None)
    if len(joined) == 1 or joined[0][0].name == METADATA_NAME:
        path, result = joined[0]
        logger.info("Joined the treatments in %s to the fields", path)
        return MetadataChoice(path, result)
    path, result = max(joined, key=lambda pair: pair[1].attrs["metadata_join"]["matched"])  # first of ties
    others = ", ".join(p.name for p, _ in joined if p != path)
    matched = result.attrs["metadata_join"]["matched"]
    return MetadataChoice(
        path,
        result,
        f"{folder} holds several metadata tables that match the images; used {path.name} "
        f"({matched} of {len(table)} fields matched), not {others}. To use another one, open that CSV "
        "(File > Open Files): phenossl opens the images it names, or the TIFFs beside it.",
    )


def _join_treatments(table, metadata_path: Path, *, strict: bool):
    """The per-field table with the treatment columns (the loaded metadata in ``attrs["metadata"]``).

    ``strict``: the user chose this table, so a table that does not match raises; a CSV merely found
    beside the images gives None instead (the reason is logged)."""
    from phenossl.io import join_metadata, load_metadata

    try:
        metadata = load_metadata(metadata_path)
        joined = join_metadata(table, metadata)
    except (InputError, PhenosslError) as exc:
        if strict:
            raise InputError(f"The metadata table {metadata_path} cannot be used with these images: {exc}") from None
        logger.info("%s was not joined to the fields: %s", metadata_path, exc)
        return None
    joined.attrs["metadata"] = metadata
    return joined


def channel_map_from_metadata(sources: Sequence[Any], metadata) -> dict[str, str] | None:
    """Every file-name channel token of ``sources`` -> its name in the metadata's ``FileName_<channel>``
    columns (tokens the table does not name keep their token), or None when it names none of them."""
    from phenossl.io.filenames import channel_key
    from phenossl.io.metadata import channel_names_from_file_columns

    if not sources or sources[0].is_multichannel_file:
        return None
    named = channel_names_from_file_columns(metadata)
    tokens = list(sources[0].paths)  # the channels as discovered: their tokens, in order
    if not any(channel_key(token) in named for token in tokens):
        return None
    mapping = {token: named.get(channel_key(token), token) for token in tokens}
    return mapping if len(set(mapping.values())) == len(mapping) else None


# --------------------------------------------------------------------------------------------------
# A metadata CSV opened by itself


@dataclass(frozen=True)
class TableImages:
    """The TIFFs a metadata table leads to, and what went missing (a sentence, or None)."""

    files: list[Path]
    problem: str | None = None
    names_images: bool = False  # the table has columns of TIFF file names


def _images_of_table(csv_path: Path) -> TableImages:
    """The image files a metadata CSV names (beside it, or in its ``PathName`` folder relative to it);
    for a table without file-name columns, the TIFFs in its folder. Raises InputError for a CSV that does
    not load as a table."""
    from phenossl.io import list_image_files, load_metadata
    from phenossl.io.metadata import file_name_columns

    metadata = load_metadata(csv_path)
    folder = csv_path.parent
    columns = [c for c in file_name_columns(metadata) if metadata[c].astype(str).str.lower().str.endswith(
        (".tif", ".tiff")).any()]
    if not columns:
        if not {"plate", "well"} & set(metadata.columns):
            return TableImages([], f"{csv_path} names no image files and no wells: it is not plate metadata.")
        files = list_image_files([folder])
        return TableImages(files, None if files else (
            f"{csv_path.name} names no image files and {folder} holds no TIFF images. Put the table beside "
            "the images, or open the images' folder."))
    found: list[Path] = []
    missing: list[str] = []
    for column in columns:
        path_column = column.replace("file_name", "path_name", 1)
        subfolders = metadata[path_column] if path_column in metadata.columns else [None] * len(metadata)
        for name, sub in zip(metadata[column], subfolders, strict=True):
            if not isinstance(name, str):
                continue
            path = _locate(folder, name, sub)
            if path is None:
                missing.append(name)
            else:
                found.append(path)
    found = sorted(set(found))
    if not found:
        return TableImages(
            [],
            names_images=True,
            problem=(
                f"None of the {len(missing)} image files named in {csv_path.name} (e.g. {missing[0]}) is in "
                f"{folder} or in the folders its path columns name (relative to the table). Put the table "
                "beside the images, or open the images' folder (its metadata CSV is then found beside them)."
            ),
        )
    problem = None
    if missing:
        problem = (
            f"{len(missing)} of the {len(missing) + len(found)} image files named in {csv_path.name} were not "
            f"found (e.g. {missing[0]}); only the files found are opened."
        )
    return TableImages(found, problem, names_images=True)


def _locate(folder: Path, name: str, subfolder: Any) -> Path | None:
    """``name`` beside the table, in its path column's folder, or in that folder's last part (a plate folder)."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    places = [folder]
    if isinstance(subfolder, str) and subfolder.strip():
        sub = Path(subfolder.strip().replace("\\", "/"))
        places += [folder / sub, folder / sub.name] if not sub.is_absolute() else [sub]
    return next((place / name for place in places if (place / name).is_file()), None)


def _is_table(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in METADATA_SUFFIXES


def _warn(message: str) -> None:
    from napari.utils.notifications import show_warning

    logger.warning("%s", message)
    show_warning(message)


def _show_field_names() -> None:
    """Caption the field slider of the viewer being opened into (the one napari reads for), if any."""
    try:
        from napari import current_viewer
    except ImportError:  # the reader used without napari
        return
    viewer = current_viewer()
    if viewer is not None:
        from phenossl.napari.field_names import install_field_names

        install_field_names(viewer)
