"""Build a tile store from plate fields (read → segment → tile) or from pre-cropped cells.

Two passes over the fields keep memory bounded for any plate size: the first segments every field
and samples pixels for the intensity percentiles (only nucleus tables and label images are kept,
on disk), the second re-reads each field, normalises it with the set-wide percentiles and cuts the
tiles straight into the memory-mapped store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenossl.atomic import check_can_write
from phenossl.config import InputConfig, SegmentConfig, TileConfig
from phenossl.errors import Cancelled, InputError, NoNucleiError
from phenossl.io import FieldSource, discover_fields, field_table, join_metadata, load_metadata, read_crops
from phenossl.io.fields import Field, read_field
from phenossl.tiles.extract import TileCut, cut_tiles, nucleus_table, tiles_inside
from phenossl.tiles.normalize import SAMPLES_PER_IMAGE, PercentileSampler, normalize_to_unit
from phenossl.tiles.store import TileStore, TileStoreWriter

logger = logging.getLogger(__name__)

#: the smallest tile (and crop) phenossl accepts, in px: TileConfig.size and TrainConfig.resolution's floor too
MIN_TILE_SIZE = 16

#: pixels per channel of each field sampled for the intensity percentiles (read when a build starts)
SAMPLES_PER_FIELD = SAMPLES_PER_IMAGE

#: progress(stage, done, total) — called from the worker thread; must not touch any UI directly.
Progress = Callable[[str, int, int], None]


@dataclass
class BuildReport:
    """What happened to every field and cell; stored in the store's description."""

    fields: int = 0
    nuclei_found: int = 0
    cells_kept: int = 0
    skipped_border: int = 0
    padded: int = 0
    fields_without_nuclei: list[str] = field(default_factory=list)
    metadata_rows_joined: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _check_cancel(cancel: threading.Event | None, what: str) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what} cancelled; nothing was written.")


def nuclear_channel_index(names: Sequence[str], nuclear: str | int) -> int:
    """Index of the nuclear stain, given by name or by position."""
    if isinstance(nuclear, int) or (isinstance(nuclear, str) and nuclear.isdigit()):
        index = int(nuclear)
        if not 0 <= index < len(names):
            raise InputError(f"nuclear channel index {index} is out of range: the images have channels {list(names)}")
        return index
    if nuclear not in names:
        raise InputError(f"no channel named {nuclear!r}: the images have channels {list(names)}")
    return list(names).index(nuclear)


def segment_field(fld: Field, nuclear: str | int, segmentation: SegmentConfig) -> np.ndarray:
    """Nuclei labels of one field, from its nuclear channel."""
    from phenossl.segment import segment_nuclei

    image = fld.image[nuclear_channel_index(fld.channel_names, nuclear)]
    options = dict(segmentation.options)
    if segmentation.backend == "cellpose":
        options.setdefault("model", segmentation.model)
        options.setdefault("weights", segmentation.weights)
        options.setdefault("device", segmentation.device)
    return segment_nuclei(image, backend=segmentation.backend, diameter=segmentation.diameter, **options)


@dataclass
class FieldInput:
    """One field to tile: how to get its pixels and, optionally, its nuclei labels.

    Files (``from_source``) are read when needed, twice, so a plate never has to fit in memory; the
    napari plugin passes arrays it already holds, with the labels the user may have corrected.
    """

    key: str
    load: Callable[[], Field]
    labels: np.ndarray | None = None  # given labels are used as they are: no segmentation
    source: FieldSource | None = None  # the files, when the field comes from files (for metadata joins)

    @classmethod
    def from_source(cls, source: FieldSource) -> FieldInput:
        return cls(key=source.key, load=lambda: read_field(source), source=source)

    @classmethod
    def from_array(cls, key: str, image: np.ndarray, channel_names: Sequence[str], *, labels: np.ndarray | None = None,
                   plate: str | None = None, well: str | None = None, site: int | None = None) -> FieldInput:
        fld = Field(image=image, channel_names=list(channel_names), key=key, plate=plate, well=well, site=site)
        return cls(key=key, load=lambda: fld, labels=labels)


def build_store_from_fields(
    fields: Sequence[FieldInput | FieldSource],
    store_path: str | Path,
    *,
    input_config: InputConfig,
    segmentation: SegmentConfig,
    tiles: TileConfig,
    metadata: pd.DataFrame | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    seed: int = 0,
) -> TileStore:
    """Segment every field (unless its labels are given), cut one tile per nucleus, write the store.

    Raises NoNucleiError if no field has a nucleus; fields without nuclei are listed in the report,
    not fatal (an empty well must not stop a plate). ``metadata`` is a per-field table (``key`` column)
    of treatments to copy onto every cell; without it, ``input_config.metadata`` is joined to the files.
    """
    fields = [f if isinstance(f, FieldInput) else FieldInput.from_source(f) for f in fields]
    if not fields:
        raise InputError("no fields to read")
    store_path = check_can_write(store_path, overwrite, folder=True)  # fail before the long segmentation pass
    replace_columns: tuple[str, ...] = ()
    if metadata is None and input_config.metadata is not None:
        # joined now, not after segmenting the whole plate: a table that joins nothing fails in seconds
        metadata, replace_columns = _field_metadata(fields, input_config), ("plate",)
    if metadata is not None and "key" not in metadata.columns:
        raise InputError("the per-field metadata table needs a 'key' column naming each field")
    report = BuildReport(fields=len(fields))
    labels_dir = store_path.with_name(store_path.name + ".labels-tmp")
    labels_dir.mkdir(parents=True, exist_ok=True)
    tables: list[pd.DataFrame] = []
    sampler: PercentileSampler | None = None
    channel_names: list[str] | None = None
    try:
        if progress:
            progress("segmenting", 0, len(fields))  # a stage's bar starts with the stage, not after its first field
        for i, item in enumerate(fields):
            _check_cancel(cancel, "Segmentation")
            fld = item.load()
            if channel_names is None:
                channel_names = list(fld.channel_names)
                sampler = PercentileSampler(len(channel_names), samples_per_image=SAMPLES_PER_FIELD, seed=seed)
            else:
                check_channels(fld, channel_names)
            sampler.add(fld.image)
            labels, without_nuclei = field_labels(fld, item.labels, input_config, segmentation)
            if without_nuclei:
                report.fields_without_nuclei.append(fld.key)
            np.save(labels_dir / f"{i}.npy", labels)
            nuclei = field_nuclei(fld, labels, i)
            report.nuclei_found += len(nuclei)
            tables.append(nuclei)
            if progress:
                progress("segmenting", i + 1, len(fields))
        check_nuclei_found(report, fields[0].key, channel_names, input_config, segmentation)
        lo_hi = sampler.percentiles(*tiles.percentiles)

        def labels_of(i: int) -> np.ndarray:
            return np.load(labels_dir / f"{i}.npy")

        def cut_of(i: int, nuclei: pd.DataFrame) -> TileCut:
            return tile_field(fields[i].load().image, nuclei, labels_of(i), lo_hi, tiles)

        return write_fields_store(
            store_path, [item.key for item in fields], tables, lo_hi, channel_names, report, labels_of=labels_of,
            cut_of=cut_of, input_config=input_config, segmentation=segmentation, tiles=tiles, metadata=metadata,
            replace_columns=replace_columns, overwrite=overwrite, progress=progress, cancel=cancel)
    finally:
        for file in labels_dir.glob("*.npy"):
            file.unlink()
        labels_dir.rmdir()


# One field, the same steps for a serial build (above) and a distributed one (phenossl.tiles.distributed):
# field_labels + field_nuclei in the first pass, tile_field in the second, write_fields_store to join them.


def check_channels(fld: Field, channel_names: Sequence[str]) -> None:
    """InputError unless the field has the run's channels (the first field's)."""
    if list(fld.channel_names) != list(channel_names):
        raise InputError(f"field {fld.key} has channels {fld.channel_names}, the first field had {list(channel_names)}")


def field_labels(fld: Field, labels: np.ndarray | None, input_config: InputConfig,
                 segmentation: SegmentConfig) -> tuple[np.ndarray, bool]:
    """The nuclei labels of a read field (segmented, unless ``labels`` are given) and whether it has none."""
    if labels is None:
        try:
            return segment_field(fld, input_config.nuclear_channel, segmentation), False
        except NoNucleiError:
            return np.zeros(fld.image.shape[1:], dtype=np.int32), True
    if labels.shape != fld.image.shape[1:]:
        raise InputError(f"labels of field {fld.key} have shape {labels.shape}, its image {fld.image.shape[1:]}")
    return labels, not labels.any()


def field_nuclei(fld: Field, labels: np.ndarray, index: int) -> pd.DataFrame:
    """The nuclei of field number ``index`` of the run: label, centroid, area, and where they are."""
    nuclei = nucleus_table(labels)
    nuclei.insert(0, "field", fld.key)
    for column in ("plate", "well", "site"):
        nuclei[column] = getattr(fld, column)
    nuclei["field_index"] = index
    nuclei["image_height"], nuclei["image_width"] = fld.image.shape[1:]
    return nuclei


def tile_field(image: np.ndarray, nuclei: pd.DataFrame, labels: np.ndarray, lo_hi: np.ndarray,
               tiles: TileConfig) -> TileCut:
    """The tiles (normalised with the run's percentiles ``lo_hi``) and central-nucleus masks of one field."""
    return cut_tiles(normalize_to_unit(image, lo_hi), nuclei.reset_index(drop=True), size=tiles.size,
                     border=tiles.border, labels=labels)


def check_nuclei_found(report: BuildReport, first_key: str, channel_names: Sequence[str] | None,
                       input_config: InputConfig, segmentation: SegmentConfig) -> None:
    """NoNucleiError when no field has a nucleus; a warning naming the fields without any."""
    if report.nuclei_found == 0:
        raise NoNucleiError(
            f"No nuclei were found in any of the {report.fields} field(s) (e.g. {first_key}). "
            "Check that the nuclear channel is right "
            f"({input_config.nuclear_channel!r} of {channel_names}) and the nucleus diameter "
            f"({segmentation.diameter or 'estimated'}); try the other segmentation backend."
        )
    if report.fields_without_nuclei:
        logger.warning("%d field(s) without nuclei: %s", len(report.fields_without_nuclei),
                       ", ".join(report.fields_without_nuclei[:5]))


def write_fields_store(
    store_path: Path,
    keys: Sequence[str],
    tables: Sequence[pd.DataFrame],
    lo_hi: np.ndarray,
    channel_names: list[str],
    report: BuildReport,
    *,
    labels_of: Callable[[int], np.ndarray],
    cut_of: Callable[[int, pd.DataFrame], TileCut],
    input_config: InputConfig,
    segmentation: SegmentConfig,
    tiles: TileConfig,
    metadata: pd.DataFrame | None = None,
    replace_columns: Sequence[str] = (),
    overwrite: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    extra_info: dict[str, Any] | None = None,
) -> TileStore:
    """The second pass: every field's labels (``labels_of(i)``) and tiles (``cut_of(i, nuclei)``, for fields
    with nuclei) written in field order into one store, with the cell table and the store's description."""
    size = tiles.size
    all_nuclei = pd.concat(tables, ignore_index=True)
    kept = _kept_by_border(all_nuclei, size, tiles.border)
    report.skipped_border = int((~kept).sum())
    n_cells = int(kept.sum())
    if n_cells == 0:
        raise NoNucleiError(
            f"All {len(all_nuclei)} nuclei are within {size // 2} px of an image border, so no "
            f"{size}x{size} tile fits. Use border: pad, or a smaller tile size."
        )

    writer = TileStoreWriter(store_path, n_cells, channel_names, size, overwrite=overwrite)
    try:
        cells = []
        if progress:
            progress("tiling", 0, len(keys))
        for i, key in enumerate(keys):
            _check_cancel(cancel, "Tiling")
            nuclei = all_nuclei[all_nuclei["field_index"] == i]
            writer.save_labels(key, labels_of(i))
            if not len(nuclei):
                continue
            cut = cut_of(i, nuclei)
            writer.append(cut.tiles, cut.masks)
            cells.append(cut.cells)
            if progress:
                progress("tiling", i + 1, len(keys))
        table = pd.concat(cells, ignore_index=True)
        report.padded = int(table["padded"].sum())
        report.cells_kept = len(table)
        table = table.drop(columns=["field_index", "image_height", "image_width"])
        table = _join_treatments(table, metadata, report, replace_columns)
        return writer.finish(
            table,
            {
                "source": "fields",
                "normalization": {"percentiles": list(tiles.percentiles), "lo_hi": lo_hi},
                "border": tiles.border,
                "nuclear_channel": channel_names[nuclear_channel_index(channel_names, input_config.nuclear_channel)],
                "segmentation": segmentation.model_dump(mode="json"),
                "report": report.as_dict(),
                **(extra_info or {}),
            },
        )
    except BaseException:
        writer.abort()
        raise


def central_nucleus_masks(nuclear: np.ndarray) -> np.ndarray:
    """(n, S, S) bool: in each pre-cropped cell's nuclear channel (n, S, S), the nucleus that the classical
    backend finds under the crop's centre (crops are centred on their cell), else the one whose centroid is
    nearest the centre; all False where no nucleus is found (those cells measure as empty)."""
    from phenossl.segment import segment_nuclei

    masks = np.zeros(nuclear.shape, dtype=bool)
    for i, image in enumerate(nuclear):
        try:
            labels = segment_nuclei(np.asarray(image, dtype=np.float32), backend="classical")
        except NoNucleiError:
            continue
        masks[i] = labels == central_label(labels)
    return masks


def central_label(labels: np.ndarray) -> int:
    """The label under the image centre, else the one whose centroid is nearest it (0 if there is none)."""
    centre = (labels.shape[0] // 2, labels.shape[1] // 2)
    if labels[centre]:
        return int(labels[centre])
    table = nucleus_table(labels)
    if table.empty:
        return 0
    distance = np.hypot(table["centroid_y"] - centre[0], table["centroid_x"] - centre[1])
    return int(table["label"].iloc[int(np.argmin(distance.to_numpy()))])


def _kept_by_border(nuclei: pd.DataFrame, size: int, border: str) -> np.ndarray:
    if border == "pad":
        return np.ones(len(nuclei), dtype=bool)
    return tiles_inside(nuclei, size, nuclei["image_height"].to_numpy(), nuclei["image_width"].to_numpy())


def _field_metadata(fields: Sequence[FieldInput], input_config: InputConfig) -> pd.DataFrame:
    """The treatments of every field (``key`` column), joined from ``input_config.metadata`` to the files."""
    sources = [f.source for f in fields]
    if any(s is None for s in sources):
        raise InputError("a metadata CSV can only be joined to fields read from files; pass a per-field table")
    fields_table = field_table(sources)
    joined = join_metadata(fields_table, load_metadata(input_config.metadata), on=input_config.metadata_join)
    # the metadata knows the plate better than a folder name does (join_metadata already merged it)
    extra = ["plate"] + [c for c in joined.columns if c not in fields_table.columns]
    return joined[["key", *extra]]


def _join_treatments(cells: pd.DataFrame, metadata: pd.DataFrame | None, report: BuildReport,
                     replace_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Add a per-field table's treatment columns to every cell through its field (``key`` = ``field``);
    ``replace_columns`` (the plate, from a metadata file) replace the cells' own values."""
    if metadata is None:
        return cells
    extra = [c for c in metadata.columns if c != "key" and (c not in cells.columns or c in replace_columns)]
    cells = cells.drop(columns=[c for c in extra if c in cells.columns])
    treatments = [c for c in extra if c not in replace_columns]
    report.metadata_rows_joined = int(metadata[treatments].notna().any(axis=1).sum()) if treatments else 0
    per_field = metadata[["key", *extra]].rename(columns={"key": "field"})
    return cells.merge(per_field, on="field", how="left", validate="many_to_one")


def build_store_from_crops(
    input_config: InputConfig,
    store_path: str | Path,
    *,
    tiles: TileConfig,
    overwrite: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    seed: int = 0,
    chunk: int = 1024,
) -> TileStore:
    """Import pre-cropped single cells into a store (normalised with set-wide percentiles)."""
    if len(input_config.paths) != 1:
        raise InputError(f"crops input needs exactly one path (a .npy/.npz file or a folder), got {len(input_config.paths)}")
    names = input_config.channel_names
    if isinstance(names, dict):
        names = list(names.values())
    crops = read_crops(input_config.paths[0], input_config.crops_csv, channel_names=names,
                       channel_axis=input_config.channel_axis)
    check_can_write(store_path, overwrite, folder=True)
    cells, joined = crops.cells, None
    if input_config.metadata is not None:  # e.g. plate/well/site of each crop -> compound, concentration
        cells = join_metadata(cells, load_metadata(input_config.metadata), on=input_config.metadata_join)
        joined = cells.attrs.get("metadata_join", {}).get("matched")
    n, n_channels, height, width = crops.images.shape
    if height != width:
        raise InputError(f"crops must be square, got {height}x{width} in {crops.source}")
    if height < MIN_TILE_SIZE:
        raise InputError(
            f"the crops in {crops.source} are {height}x{width} px: too small to hold a cell. phenossl needs at least "
            f"{MIN_TILE_SIZE} px (its smallest tile and training resolution: a nucleus of the smallest size the "
            "segmentation keeps, with its border). Crop larger cells, or check the stack's axis order."
        )
    sampler = PercentileSampler(n_channels, samples_per_image=200_000, seed=seed)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, 2000), replace=False))
    sampler.add(np.asarray(crops.images[sample]))
    lo_hi = sampler.percentiles(*tiles.percentiles)
    nuclear = nuclear_channel_index(crops.channel_names, input_config.nuclear_channel)
    writer = TileStoreWriter(store_path, n, crops.channel_names, height, overwrite=overwrite)
    try:
        if progress:
            progress("importing", 0, n)
        for start in range(0, n, chunk):
            _check_cancel(cancel, "Importing crops")
            images = normalize_to_unit(np.asarray(crops.images[start : start + chunk]), lo_hi, channel_axis=1)
            writer.append(images, central_nucleus_masks(images[:, nuclear]))
            if progress:
                progress("importing", min(start + chunk, n), n)
        return writer.finish(
            cells,
            {
                "source": "crops",
                "crops": str(crops.source),
                "nuclear_channel": crops.channel_names[nuclear],
                "nucleus_masks": "classical segmentation of each crop's nuclear channel, the object at the centre",
                "normalization": {"percentiles": list(tiles.percentiles), "lo_hi": lo_hi},
                "report": {"cells_kept": n, "metadata_rows_joined": joined},
            },
        )
    except BaseException:
        writer.abort()
        raise


def build_store(config_input: InputConfig, store_path, *, segmentation: SegmentConfig, tiles: TileConfig,
                overwrite: bool = False, progress: Progress | None = None,
                cancel: threading.Event | None = None, seed: int = 0, scheduler: Any = None) -> TileStore:
    """Build the store the input section asks for (plate fields or pre-cropped cells).

    ``scheduler`` (``"local:N"``, a Dask scheduler's address or a ``distributed.Client``) segments and tiles
    the fields as Dask tasks (:mod:`phenossl.tiles.distributed`): the same store as without it."""
    if config_input.kind == "crops":
        if scheduler is not None:
            logger.warning("pre-cropped cells are imported in this process: the Dask scheduler is not used")
        return build_store_from_crops(config_input, store_path, tiles=tiles, overwrite=overwrite,
                                      progress=progress, cancel=cancel, seed=seed)
    if scheduler is not None:
        from phenossl.tiles.distributed import build_store_distributed

        return build_store_distributed(config_input, store_path, segmentation=segmentation, tiles=tiles,
                                       scheduler=scheduler, overwrite=overwrite, progress=progress, cancel=cancel,
                                       seed=seed)
    return build_store_from_fields(config_fields(config_input), store_path, input_config=config_input,
                                   segmentation=segmentation, tiles=tiles, overwrite=overwrite, progress=progress,
                                   cancel=cancel, seed=seed)


def config_fields(config_input: InputConfig) -> list[FieldSource]:
    """The fields the input section names, in the order a run tiles them."""
    if not config_input.paths:
        raise InputError("no input paths given: name the plate folder(s) or image files")
    return discover_fields(
        config_input.paths,
        channel_names=config_input.channel_names,
        pattern=config_input.filename_pattern,
        channel_axis=config_input.channel_axis,
        plate=config_input.plate,
    )
