"""Discovery: list the TIFF files of a plate and group them into fields, one file per channel (screening
names) or one multi-channel file per field. Only names are read (one directory listing per folder, so
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
from collections.abc import Iterable, Iterator
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
from phenossl.io.images import TIFF_SUFFIXES, ChannelAxis

# The logger users filter on; these messages were logged by phenossl.io.fields before it was split.
logger = logging.getLogger("phenossl.io.fields")


def list_image_files(
    paths: str | os.PathLike | Iterable[str | os.PathLike], *, recursive: bool = False
) -> list[Path]:
    """All TIFF files in ``paths`` (files or folders), sorted naturally, hidden files skipped.

    Each folder is listed once with ``os.scandir`` (no per-file globbing). Hidden files are skipped
    because copies from macOS leave ``._name.tif`` companions that are not images.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: set[Path] = set()
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found.update(_scan_folder(path, recursive))
        elif path.is_file():
            if not path.name.lower().endswith(TIFF_SUFFIXES):
                raise InputError(f"{path} is not a TIFF file (.tif/.tiff); give TIFF images or their folder.")
            found.add(path)
        else:
            raise InputError(f"{path} does not exist. Check the path of the images.")
    return sorted(found, key=lambda p: natural_sort_key(str(p)))


def _scan_folder(folder: Path, recursive: bool) -> Iterator[Path]:
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_file() and entry.name.lower().endswith(TIFF_SUFFIXES):
                yield Path(entry.path)
            elif recursive and entry.is_dir():
                yield from _scan_folder(Path(entry.path), recursive)


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
    files = list_image_files(inputs, recursive=recursive)
    if not files:
        where = ", ".join(str(p) for p in inputs)
        raise InputError(f"No TIFF files (.tif/.tiff) found in {where}.")
    compile_pattern(pattern)  # a bad user regex is a ConfigError before anything else
    parsed = [(path, parse_screening_name(path.name, pattern)) for path in files]
    named = [(path, name) for path, name in parsed if name is not None]
    if not named:
        if isinstance(pattern, str) and pattern.lower() == "auto":
            return _single_file_fields(files, channel_names, channel_axis, plate)
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
    stems = [strip_tiff_suffix(path.name) for path in files]
    stem_counts = Counter(stems)
    sources = []
    for path, stem in zip(files, stems, strict=True):
        field_plate = plate or path.parent.name or None
        well, site = well_and_site(stem)
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
            )
        )
    return sorted(sources, key=lambda s: (s.plate or "", natural_sort_key(s.key)))
