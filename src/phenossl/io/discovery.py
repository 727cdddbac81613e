"""Discovery: list the image files of a plate and group them into fields, one TIFF per channel (screening
names) or one multi-channel file per field; a microscope file (ND2, CZI, LIF) gives one field per scene, an
OME-Zarr HCS plate one field per well image (:mod:`phenossl.io.omezarr`). Only names are read (one directory listing per folder, so
10k-file plates are fine); pixels are read one field at a time by :func:`phenossl.io.fields.read_field`.

Plate rule (documented because it decides how fields meet the metadata): an explicit ``plate=``
wins; otherwise the ``plate`` group of a user regex; otherwise the name of the folder holding the
file. A metadata join through file names then replaces the plate with the metadata's own value
(see :func:`phenossl.io.metadata.join_metadata`).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from phenossl.errors import InputError
from phenossl.io.field_names import (
    ChannelNames,
    describe_channel,
    field_key,
    multichannel_roles,
    resolve_token_names,
    strip_tiff_suffix,
    well_and_site,
)
from phenossl.io.field_source import MULTICHANNEL_KEY, FieldSource
from phenossl.io.filenames import (
    Pattern,
    ScreeningName,
    channel_key,
    compile_pattern,
    natural_sort_key,
    parse_screening_name,
)
from phenossl.io.formats import (
    BIOIO_SUFFIXES,
    MICROSCOPE_SUFFIXES,
    SIMPLE_SUFFIXES,
    bioio_format,
    scene_count,
)
from phenossl.io.images import TIFF_SUFFIXES, ChannelAxis, ome_series_count
from phenossl.io.omezarr import is_zarr, plate_fields, plate_name

# The logger users filter on; these messages were logged by phenossl.io.fields before it was split.
logger = logging.getLogger("phenossl.io.fields")


IMAGE_KINDS = "TIFF (.tif/.tiff, OME-TIFF), ND2, CZI, LIF, PNG / JPEG / BMP, or an OME-Zarr plate (.zarr folder)"


def list_image_files(
    paths: str | os.PathLike | Iterable[str | os.PathLike], *, recursive: bool = False
) -> list[Path]:
    """All image files in ``paths`` (files or folders), sorted naturally, hidden files skipped.

    A folder gives its TIFFs, microscope files (.nd2, .czi, .lif) and OME-Zarr plates (``.zarr`` folders);
    its PNG / JPEG / BMP images only when it holds none of those (beside a plate's TIFFs they are thumbnails
    or figures). A Zarr folder given itself is a plate. Each folder is listed once with ``os.scandir`` (no
    per-file globbing). Hidden files are skipped because copies from macOS leave ``._name.tif`` companions
    that are not images.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: set[Path] = set()
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found.update([path] if is_zarr(path) else _scan_folder(path, recursive))
        elif path.is_file():
            if not path.name.lower().endswith(TIFF_SUFFIXES + BIOIO_SUFFIXES):
                raise InputError(f"{path} is not an image file phenossl reads; give {IMAGE_KINDS}, or their folder.")
            found.add(path)
        else:
            raise InputError(f"{path} does not exist. Check the path of the images.")
    return sorted(found, key=lambda p: natural_sort_key(str(p)))


def _scan_folder(folder: Path, recursive: bool) -> list[Path]:
    found: list[Path] = []
    simple: list[Path] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name.lower()
            if name.startswith("."):
                continue
            if entry.is_file() and name.endswith(TIFF_SUFFIXES + MICROSCOPE_SUFFIXES):
                found.append(Path(entry.path))
            elif entry.is_file() and name.endswith(SIMPLE_SUFFIXES):
                simple.append(Path(entry.path))
            elif entry.is_dir() and name.endswith(".zarr"):
                found.append(Path(entry.path))
            elif recursive and entry.is_dir():
                found.extend(_scan_folder(Path(entry.path), recursive))
    return found or simple


def discover_fields(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    channel_names: ChannelNames = None,
    pattern: Pattern = "auto",
    channel_axis: ChannelAxis = "auto",
    plate: str | None = None,
    recursive: bool = False,
) -> list[FieldSource]:
    """Group image files into fields, sorted by plate then natural field name.

    Files whose names follow ``pattern`` (BBBC021 / ImageXpress, or a user regex) are grouped one
    file per channel; with ``pattern="auto"`` and no such name, every TIFF is a multi-channel field.
    ``channel_names`` selects and names channels: a mapping ``{"w1": "DNA", ...}`` (only those
    channels, in that order), or a list of names for the channels found, in natural order. A field
    missing a channel, or with two files for one channel, raises InputError naming it.
    """
    inputs = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found = list_image_files(inputs, recursive=recursive)
    if not found:
        where = ", ".join(str(p) for p in inputs)
        raise InputError(f"No TIFF files (.tif/.tiff) or other images ({IMAGE_KINDS}) found in {where}.")
    compile_pattern(pattern)  # a bad user regex is a ConfigError before anything else
    files = [path for path in found if path.is_file() and path.name.lower().endswith(TIFF_SUFFIXES)]
    others = [path for path in found if path.is_file() and bioio_format(path) is not None]
    plates = [path for path in found if path.is_dir()]
    per_channel = _tiff_fields(files, channel_names, pattern, plate) if files else None
    _warn_per_channel_images(others)
    singles = others if per_channel is not None else files + others  # TIFFs without screening names: one each
    sources = per_channel or []
    sources += _single_file_fields(singles, channel_names, channel_axis, plate) if singles else []
    sources += _zarr_fields(plates, channel_names, plate) if plates else []
    _check_unique_keys(sources)
    return sources


def _tiff_fields(
    files: list[Path], channel_names: ChannelNames, pattern: Pattern, plate: str | None
) -> list[FieldSource] | None:
    """Per-channel fields of TIFFs with screening names; None when no name follows the ``auto`` pattern (each
    TIFF is then a multi-channel field)."""
    parsed = [(path, parse_screening_name(path.name, pattern)) for path in files]
    named = [(path, name) for path, name in parsed if name is not None]
    if not named:
        if isinstance(pattern, str) and pattern.lower() == "auto":
            return None
        examples = ", ".join(path.name for path in files[:3])
        raise InputError(
            f"No file name matches the pattern {getattr(pattern, 'pattern', pattern)!r} (e.g. {examples}). "
            "Fix the pattern, or use pattern='auto' to read each file as a multi-channel field."
        )
    skipped = [path for path, name in parsed if name is None]
    if skipped:
        logger.warning(
            "Skipped %d TIFF file(s) whose names do not follow the screening pattern, e.g. %s",
            len(skipped),
            skipped[0].name,
        )
    return _per_channel_fields(named, channel_names, plate)


def _per_channel_fields(
    named: list[tuple[Path, ScreeningName]], channel_names: ChannelNames, plate: str | None
) -> list[FieldSource]:
    tokens = {channel_key(name.channel): name.channel for _, name in named}
    wanted = resolve_token_names(tokens, channel_names)
    groups: dict[tuple[str | None, str], dict[str, list[Path]]] = {}
    info: dict[tuple[str | None, str], ScreeningName] = {}
    for path, name in named:
        field_plate = plate or name.plate or path.parent.name or None
        group_key = (field_plate, name.field_stem)
        groups.setdefault(group_key, {}).setdefault(channel_key(name.channel), []).append(path)
        info.setdefault(group_key, name)

    stem_counts = Counter(stem for _, stem in groups)
    sources, incomplete = [], []
    for group_key in sorted(groups, key=lambda k: (k[0] or "", natural_sort_key(k[1]))):
        field_plate, stem = group_key
        key = field_key(stem, field_plate, stem_counts)
        by_token = groups[group_key]
        missing = [
            describe_channel(role, tokens.get(tok, tok)) for tok, role in wanted if tok not in by_token
        ]
        if missing:
            found = ", ".join(tokens[t] for t in sorted(by_token, key=natural_sort_key))
            incomplete.append(f"{key} lacks {', '.join(missing)} (has {found})")
            continue
        paths = {}
        for tok, role in wanted:
            if len(by_token[tok]) > 1:
                clash = ", ".join(p.name for p in by_token[tok])
                raise InputError(
                    f"Field {key} has {len(by_token[tok])} files for channel {role!r}: {clash}. "
                    "Keep one of them (or give each plate its own folder)."
                )
            paths[role] = by_token[tok][0]
        name = info[group_key]
        sources.append(
            FieldSource(
                key=key,
                paths=paths,
                plate=field_plate,
                well=name.well,
                site=name.site,
                channel_names=tuple(role for _, role in wanted),
            )
        )
    if incomplete:
        shown = "; ".join(incomplete[:5]) + (
            f"; and {len(incomplete) - 5} more" if len(incomplete) > 5 else ""
        )
        raise InputError(
            f"{len(incomplete)} field(s) have an incomplete channel set: {shown}. Add the missing files, "
            "remove those fields' files, or leave the channel out of channel_names."
        )
    return sources


def _single_file_fields(
    files: list[Path], channel_names: ChannelNames, channel_axis: ChannelAxis, plate: str | None
) -> list[FieldSource]:
    names, channel_map = multichannel_roles(channel_names)
    scenes = []  # (path, field stem, scene index or None)
    for path in files:
        stem = strip_tiff_suffix(path.name) if bioio_format(path) is None else path.name[: -len(path.suffix)]
        count = 1
        if path.name.lower().endswith(MICROSCOPE_SUFFIXES):
            count = scene_count(path)
        elif path.name.lower().endswith((".ome.tif", ".ome.tiff")):
            count = ome_series_count(path)
        if count == 1:
            scenes.append((path, stem, None if bioio_format(path) is None else 0, False))
        else:  # one field per scene (ND2 position, CZI / LIF scene, OME-TIFF image): site = scene + 1
            scenes += [(path, f"{stem}_s{index + 1}", index, True) for index in range(count)]
    stem_counts = Counter(stem for _, stem, _, _ in scenes)
    sources = []
    for path, stem, scene, several in scenes:
        field_plate = plate or path.parent.name or None
        well, site = well_and_site(stem)
        if several:
            site = scene + 1
        sources.append(
            FieldSource(
                key=field_key(stem, field_plate, stem_counts),
                paths={MULTICHANNEL_KEY: path},
                plate=field_plate,
                well=well,
                site=site,
                channel_names=names,
                channel_map=channel_map,
                channel_axis=channel_axis,
                member=None if scene is None else str(scene),
            )
        )
    return sorted(sources, key=lambda s: (s.plate or "", natural_sort_key(s.key)))


def _zarr_fields(roots: list[Path], channel_names: ChannelNames, plate: str | None) -> list[FieldSource]:
    """One field per well image of each OME-Zarr HCS plate, keyed ``<well>_s<site>`` (the plate in front when
    several plates share a key), in the plate's well order."""
    names, channel_map = multichannel_roles(channel_names)
    found = []
    for root in roots:
        field_plate = plate or plate_name(root)
        found += [(root, field_plate, fld) for fld in plate_fields(root)]
    stem_counts = Counter(f"{fld.well}_s{fld.site}" for _, _, fld in found)
    return [
        FieldSource(
            key=field_key(f"{fld.well}_s{fld.site}", field_plate, stem_counts),
            paths={MULTICHANNEL_KEY: root},
            plate=field_plate,
            well=fld.well,
            site=fld.site,
            channel_names=names,
            channel_map=channel_map,
            member=fld.member,
        )
        for root, field_plate, fld in found
    ]


def _warn_per_channel_images(files: list[Path]) -> None:
    """PNG / JPEG files named like one file per channel are still one field each: say so once."""
    named = [path for path in files
             if path.suffix.lower() in SIMPLE_SUFFIXES and parse_screening_name(f"{path.stem}.tif", "auto")]
    if named:
        logger.warning(
            "%d image(s) such as %s are named like one file per channel, but phenossl groups channel files into "
            "fields only for TIFFs: each is read as a field of its own. Save them as TIFF to group them.",
            len(named), named[0].name,
        )


def _check_unique_keys(sources: list[FieldSource]) -> None:
    counts = Counter(source.key for source in sources)
    clashes = sorted(key for key, n in counts.items() if n > 1)
    if clashes:
        where = [", ".join(str(p) for p in s.source_files) for s in sources if s.key == clashes[0]]
        raise InputError(
            f"Two fields are both called {clashes[0]!r} ({'; '.join(where)}). Open them separately, or give each "
            "plate its own folder."
        )
