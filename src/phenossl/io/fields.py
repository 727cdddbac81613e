"""Find and read multi-channel fields of view, from one TIFF per field or one TIFF per channel.

A *field* is one site of one well: the unit that is segmented and tiled. Discovery only lists and
parses names (cheap, one directory listing per folder, so 10k-file plates are fine); pixels are read
one field at a time by :func:`read_field`, so a whole plate never has to fit in memory.

Plate rule (documented because it decides how fields meet the metadata): an explicit ``plate=``
wins; otherwise the ``plate`` group of a user regex; otherwise the name of the folder holding the
file. A metadata join through file names then replaces the plate with the metadata's own value
(see :func:`phenossl.io.metadata.join_metadata`).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree

import numpy as np
import pandas as pd

from phenossl.errors import ConfigError, InputError
from phenossl.io.filenames import (
    Pattern,
    ScreeningName,
    channel_key,
    compile_pattern,
    natural_sort_key,
    normalize_well,
    parse_screening_name,
)

logger = logging.getLogger(__name__)

ChannelAxis = int | Literal["auto"] | None
"""Where the channels are: an axis index of the array as stored, or ``"auto"`` (``None`` means auto)."""
ChannelNames = Sequence[str] | Mapping[str | int, str] | None
"""Channel roles: names in channel order, or a mapping from channel token / index to name."""

TIFF_SUFFIXES = (".tif", ".tiff")
MULTICHANNEL_KEY = "all"
"""The ``FieldSource.paths`` key of a field stored as one multi-channel file."""
MAX_CHANNELS = 8
"""Largest axis that auto-detection takes for channels; larger channel counts need ``channel_axis``."""
MIN_IMAGE_SIZE = 16
"""Smallest image side that auto-detection accepts next to a channel axis."""

_FIELD_IN_NAME = re.compile(r"(?:^|_)(?P<well>[A-Za-z]{1,2}\d{1,3})_s(?P<site>\d+)(?=[_.]|$)")


@dataclass(frozen=True)
class FieldSource:
    """Where one field's pixels are, and what it is; nothing is loaded.

    ``paths`` maps channel name -> file for one-file-per-channel fields (in channel order), or holds
    one entry under ``MULTICHANNEL_KEY`` for a multi-channel file. For a multi-channel file the
    channel names are only known once it is read (they may come from OME metadata), so
    ``channel_names`` is None unless the user gave a list; ``channel_map`` keeps a user mapping
    (channel index or stored name -> role) to apply on reading.
    """

    key: str
    paths: dict[str, Path]
    plate: str | None = None
    well: str | None = None
    site: int | None = None
    channel_names: tuple[str, ...] | None = None
    channel_map: tuple[tuple[str, str], ...] | None = None
    channel_axis: ChannelAxis = "auto"

    @property
    def is_multichannel_file(self) -> bool:
        return list(self.paths) == [MULTICHANNEL_KEY]

    @property
    def source_files(self) -> tuple[Path, ...]:
        return tuple(self.paths.values())


@dataclass
class Field:
    """One field's pixels, ``image`` (C, Y, X) in the file's own dtype, with the names of its channels."""

    image: np.ndarray
    channel_names: list[str]
    key: str
    plate: str | None = None
    well: str | None = None
    site: int | None = None
    source_files: tuple[Path, ...] = field(default_factory=tuple)

    def channel_index(self, name: str) -> int:
        """Index of the channel called ``name`` (e.g. the nuclear stain); InputError lists the names."""
        if name in self.channel_names:
            return self.channel_names.index(name)
        raise InputError(
            f"Field {self.key} has no channel named {name!r}; its channels are {self.channel_names}. "
            "Check the channel names (e.g. nuclear_channel) against the ones given when reading."
        )

    def channel(self, name: str) -> np.ndarray:
        """The (Y, X) plane of the channel called ``name``."""
        return self.image[self.channel_index(name)]


# ---------------------------------------------------------------------------------------------------
# Pure array helpers


def guess_channel_axis(shape: Sequence[int]) -> int | None:
    """The channel axis of a 3-D shape, or None when it cannot be told.

    Channels are an axis of at most ``MAX_CHANNELS`` at the start or the end, with the two other
    axes at least ``MIN_IMAGE_SIZE``; exactly one axis may qualify. Anything else (tiny images, a
    channel axis in the middle, many channels) is ambiguous and needs an explicit ``channel_axis``.
    """
    if len(shape) != 3:
        return None
    candidates = [
        axis
        for axis in (0, 2)
        if shape[axis] <= MAX_CHANNELS and all(shape[a] >= MIN_IMAGE_SIZE for a in range(3) if a != axis)
    ]
    return candidates[0] if len(candidates) == 1 else None


def check_pixels(array: np.ndarray, source: str, *, check_finite: bool = True) -> None:
    """Reject pixel types that cannot be intensities: bool (a mask?), complex, text/objects, NaN/inf.

    ``check_finite`` reads every float pixel; callers pass False for memory-mapped stacks that must
    not be read in full.
    """
    kind = array.dtype.kind
    if kind == "b":
        raise InputError(
            f"{source} holds boolean pixels (a mask?), not intensities. Give the intensity image instead."
        )
    if kind == "c":
        raise InputError(
            f"{source} holds complex numbers ({array.dtype}); save the magnitude as a real image."
        )
    if kind not in "uif":
        raise InputError(f"{source} holds {array.dtype} values, not numbers; it cannot be used as an image.")
    if kind == "f" and check_finite and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise InputError(
            f"{source} contains {bad} NaN or infinite pixel values. Replace them (e.g. with 0) "
            "before reading."
        )


def to_cyx(
    array: np.ndarray, *, channel_axis: ChannelAxis = "auto", axes: str | None = None, source: str = "image"
) -> np.ndarray:
    """Return ``array`` as (C, Y, X), finding the channel axis as documented in ``read_image_file``.

    ``axes`` are the letters a file's metadata gives its axes (tifffile's ``series.axes``: C or S for
    channels/samples, Y, X, Z, T; Q and I mean unknown). Singleton axes are dropped first.
    """
    if array.ndim < 2:
        raise InputError(
            f"{source} is {array.ndim}-D (shape {array.shape}); an image needs at least Y and X."
        )
    if channel_axis is not None and channel_axis != "auto":
        return _move_explicit_axis(array, channel_axis, source)
    keep = [axis for axis, size in enumerate(array.shape) if size != 1]
    if axes is not None and len(axes) == array.ndim:
        axes = "".join(axes[axis] for axis in keep)
    else:
        axes = None
    array = array.reshape([array.shape[axis] for axis in keep])
    if array.ndim == 2:
        return array[np.newaxis]
    if array.ndim < 2:
        raise InputError(f"{source} has fewer than two axes longer than 1; it is not an image.")
    for letter, what in (("Z", "z-planes"), ("T", "time points")):
        if axes and letter in axes:
            raise InputError(
                f"{source} has {array.shape[axes.index(letter)]} {what} (axes {axes}, shape {array.shape}). "
                "phenossl reads 2-D multi-channel fields: project or pick one plane first."
            )
    if array.ndim != 3:
        raise InputError(
            f"{source} is {array.ndim}-D (shape {array.shape}) without a clear channel axis. "
            "Save fields as (C, Y, X) or (Y, X, C)."
        )
    axis = _axis_from_letters(axes)
    if axis is None:
        axis = guess_channel_axis(array.shape)
    if axis is None:
        raise InputError(
            f"Cannot tell which axis of {source} (shape {array.shape}) holds the channels. "
            "Pass channel_axis=0 (channels first) or channel_axis=-1 (channels last)."
        )
    return np.moveaxis(array, axis, 0)


def _axis_from_letters(axes: str | None) -> int | None:
    """The channel axis a file declares: exactly one C or S, next to Y and X."""
    if not axes or sorted(axes) not in (sorted("CYX"), sorted("SYX")):
        return None
    return axes.index("C") if "C" in axes else axes.index("S")


def _move_explicit_axis(array: np.ndarray, channel_axis: int, source: str) -> np.ndarray:
    if not isinstance(channel_axis, (int, np.integer)) or not -array.ndim <= channel_axis < array.ndim:
        raise ConfigError(
            f"channel_axis={channel_axis!r} does not fit {source} of shape {array.shape}; "
            f"use an axis index from {-array.ndim} to {array.ndim - 1}, or 'auto'."
        )
    moved = np.moveaxis(array, int(channel_axis), 0)
    rest = [size for size in moved.shape[1:] if size != 1]
    if len(rest) != 2:
        raise InputError(
            f"{source} has shape {array.shape}: after taking axis {channel_axis} as channels it is not "
            "2-D. Save fields as (C, Y, X) or (Y, X, C)."
        )
    return moved.reshape(moved.shape[0], *rest)


# ---------------------------------------------------------------------------------------------------
# Reading TIFF files


class _TiffProblems(logging.Handler):
    """Collect tifffile's warnings in this thread: a truncated multi-page file is read *partly* with
    only a logged warning, which must become an error here."""

    MARKERS = (
        "invalid page offset",
        "invalid offset",
        "corrupted",
        "failed to read",
        "failed to reshape",
        "truncat",
    )

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.thread == self.thread and any(marker in message for marker in self.MARKERS):
            self.messages.append(message)


@contextmanager
def _catch_tifffile_problems() -> Iterator[_TiffProblems]:
    handler = _TiffProblems()
    tifffile_logger = logging.getLogger("tifffile")
    tifffile_logger.addHandler(handler)
    try:
        yield handler
    finally:
        tifffile_logger.removeHandler(handler)


def _read_tiff(path: Path) -> tuple[np.ndarray, str, list[str] | None]:
    """Pixels, axis letters and OME channel names (if any) of a TIFF's first series."""
    import tifffile

    if not path.is_file():
        raise InputError(f"Image file {path} does not exist (or is not a file).")
    try:
        with _catch_tifffile_problems() as problems, tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            array = series.asarray()
            axes = series.axes
            names = _ome_channel_names(tif.ome_metadata) if tif.is_ome else None
    except MemoryError:
        raise
    except Exception as error:  # any parser failure means the file cannot be trusted
        raise InputError(
            f"Cannot read {path}: it is not a readable TIFF or it is truncated/corrupt "
            f"({type(error).__name__}: {error}). Re-export or re-copy the file."
        ) from None
    if problems.messages:
        raise InputError(
            f"Cannot read {path} completely: it looks truncated or corrupt ({problems.messages[0]}). "
            "Re-export or re-copy the file."
        )
    return array, axes, names


def _ome_channel_names(ome_xml: str | None) -> list[str] | None:
    """Channel names of the first OME Image, or None when some are missing."""
    if not ome_xml:
        return None
    try:
        root = ElementTree.fromstring(ome_xml)
    except ElementTree.ParseError:
        return None
    image = next((el for el in root.iter() if el.tag.endswith("}Image") or el.tag == "Image"), None)
    if image is None:
        return None
    names = [el.get("Name") for el in image.iter() if el.tag.endswith("}Channel") or el.tag == "Channel"]
    return names if names and all(names) else None  # type: ignore[return-value]


def read_image_file(path: str | os.PathLike, channel_axis: ChannelAxis = "auto") -> np.ndarray:
    """Read a TIFF / OME-TIFF as (C, Y, X) in its own dtype.

    Channel axis: an explicit ``channel_axis`` (index into the array tifffile returns) wins; otherwise
    the axes the file declares (OME, ImageJ or tifffile metadata: one C or S axis beside Y and X);
    otherwise a leading or trailing axis of at most 8 next to image axes of at least 16. 2-D images
    are one channel. Unreadable files, 1-D or ambiguous 4-D data, z-stacks, bool/complex pixels and
    NaNs raise InputError naming the file.
    """
    path = Path(path)
    array, axes, _ = _read_tiff(path)
    image = to_cyx(array, channel_axis=channel_axis, axes=axes, source=str(path))
    check_pixels(image, str(path))
    return image


# ---------------------------------------------------------------------------------------------------
# Discovery


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
    wanted = _resolve_token_names(tokens, channel_names)
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
        key = stem if stem_counts[stem] == 1 else f"{field_plate}/{stem}"
        by_token = groups[group_key]
        missing = [
            _describe_channel(role, tokens.get(tok, tok)) for tok, role in wanted if tok not in by_token
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


def _describe_channel(role: str, token: str) -> str:
    return repr(role) if role == token else f"{role!r} ({token})"


def _resolve_token_names(tokens: dict[str, str], channel_names: ChannelNames) -> list[tuple[str, str]]:
    """(channel token key, role name) pairs in channel order, from the user's names or the tokens."""
    ordered = sorted(tokens, key=natural_sort_key)
    if channel_names is None:
        return [(tok, tokens[tok]) for tok in ordered]
    if isinstance(channel_names, str):
        raise ConfigError(
            f"channel_names={channel_names!r} is a single string; give a list of names in channel order "
            "or a mapping like {'w1': 'DNA', 'w2': 'tubulin'}."
        )
    if isinstance(channel_names, Mapping):
        pairs = [(channel_key(str(token)), str(role)) for token, role in channel_names.items()]
        unknown = [
            str(token) for token, (tok, _) in zip(channel_names, pairs, strict=True) if tok not in tokens
        ]
        if unknown:
            raise ConfigError(
                f"channel_names names channel(s) {unknown} that no file name has; the files have channels "
                f"{[tokens[t] for t in ordered]}."
            )
        left_out = [tokens[t] for t in ordered if t not in {tok for tok, _ in pairs}]
        if left_out:
            logger.info("Channel(s) %s are not in channel_names and are not read.", ", ".join(left_out))
    else:
        names = [str(name) for name in channel_names]
        if len(names) != len(ordered):
            raise ConfigError(
                f"channel_names has {len(names)} name(s) {names} but the files have {len(ordered)} "
                f"channel(s) {[tokens[t] for t in ordered]}. Give one name per channel, or a mapping "
                "to pick channels."
            )
        pairs = list(zip(ordered, names, strict=True))
    _check_unique_roles([role for _, role in pairs])
    return pairs


def _check_unique_roles(roles: list[str]) -> None:
    duplicates = sorted({role for role in roles if roles.count(role) > 1})
    if duplicates:
        raise ConfigError(
            f"channel_names gives the name(s) {duplicates} to more than one channel; names must differ."
        )


def _single_file_fields(
    files: list[Path], channel_names: ChannelNames, channel_axis: ChannelAxis, plate: str | None
) -> list[FieldSource]:
    names, channel_map = None, None
    if isinstance(channel_names, str):
        _resolve_token_names({}, channel_names)  # raises the ConfigError for a bare string
    elif isinstance(channel_names, Mapping):
        channel_map = tuple((str(index), str(role)) for index, role in channel_names.items())
        _check_unique_roles([role for _, role in channel_map])
    elif channel_names is not None:
        names = tuple(str(name) for name in channel_names)
        _check_unique_roles(list(names))
    stems = [_strip_tiff_suffix(path.name) for path in files]
    stem_counts = Counter(stems)
    sources = []
    for path, stem in zip(files, stems, strict=True):
        field_plate = plate or path.parent.name or None
        key = stem if stem_counts[stem] == 1 else f"{field_plate}/{stem}"
        match = _FIELD_IN_NAME.search(stem)
        sources.append(
            FieldSource(
                key=key,
                paths={MULTICHANNEL_KEY: path},
                plate=field_plate,
                well=normalize_well(match.group("well")) if match else None,
                site=int(match.group("site")) if match else None,
                channel_names=names,
                channel_map=channel_map,
                channel_axis=channel_axis,
            )
        )
    return sorted(sources, key=lambda s: (s.plate or "", natural_sort_key(s.key)))


def _strip_tiff_suffix(name: str) -> str:
    return re.sub(r"(\.ome)?\.tiff?$", "", name, flags=re.IGNORECASE)


# ---------------------------------------------------------------------------------------------------
# Reading fields


def read_field(source: FieldSource) -> Field:
    """Load one field as (C, Y, X) with its channel names, keeping the files' dtype.

    Per-channel files must each hold one 2-D plane of the same shape ("mismatched channel files"
    otherwise); different integer dtypes are promoted losslessly with numpy's rules.
    """
    if source.is_multichannel_file:
        return _read_multichannel_field(source)
    planes, shapes = [], {}
    for role, path in source.paths.items():
        image = read_image_file(path, channel_axis="auto")
        if image.shape[0] != 1:
            raise InputError(
                f"{path} holds {image.shape[0]} channels, but it is the {role!r} file of field {source.key} "
                "and per-channel files must hold one. Read multi-channel files without a screening pattern."
            )
        planes.append(image[0])
        shapes[path.name] = image.shape[1:]
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise InputError(
            f"Field {source.key} has mismatched channel files (different shapes): {listed}. "
            "All channels of one field must have the same size."
        )
    dtype = np.result_type(*planes)
    image = np.stack([plane.astype(dtype, copy=False) for plane in planes])
    return _field_from(source, image, list(source.paths))


def _read_multichannel_field(source: FieldSource) -> Field:
    path = source.paths[MULTICHANNEL_KEY]
    array, axes, stored_names = _read_tiff(path)
    image = to_cyx(array, channel_axis=source.channel_axis, axes=axes, source=str(path))
    check_pixels(image, str(path))
    n_channels = image.shape[0]
    if stored_names is not None and len(stored_names) != n_channels:
        stored_names = None
    available = stored_names or [f"ch{i}" for i in range(n_channels)]
    if source.channel_map is not None:
        indices = [_channel_position(key, available, path) for key, _ in source.channel_map]
        return _field_from(source, image[indices], [role for _, role in source.channel_map])
    if source.channel_names is not None:
        if len(source.channel_names) != n_channels:
            raise InputError(
                f"{path} has {n_channels} channel(s) (shape {image.shape}) but {len(source.channel_names)} "
                f"channel name(s) were given: {list(source.channel_names)}. Give one name per channel, or "
                "a mapping {index: name} to pick channels."
            )
        return _field_from(source, image, list(source.channel_names))
    return _field_from(source, image, list(available))


def _channel_position(key: str, available: list[str], path: Path) -> int:
    """A mapping key for a multi-channel file: a stored channel name, ``chN``, or an index."""
    if key in available:
        return available.index(key)
    if key.lstrip("-").isdigit() and -len(available) <= int(key) < len(available):
        return int(key) % len(available)
    if re.fullmatch(r"ch\d+", key) and int(key[2:]) < len(available):
        return int(key[2:])
    raise InputError(
        f"{path} has no channel {key!r}: it has {len(available)} channel(s) {available} "
        "(map them by index, e.g. {0: 'DNA'}, or by these names)."
    )


def _field_from(source: FieldSource, image: np.ndarray, names: list[str]) -> Field:
    return Field(
        image=image,
        channel_names=names,
        key=source.key,
        plate=source.plate,
        well=source.well,
        site=source.site,
        source_files=source.source_files,
    )


def field_table(sources: Sequence[FieldSource]) -> pd.DataFrame:
    """One row per field (key, plate, well, site, and each channel's file name as ``file_<channel>``).

    This is the per-field table that :func:`phenossl.io.metadata.join_metadata` adds treatments to;
    the file-name columns let it join through names such as BBBC021's ``Image_FileName_DAPI``.
    """
    rows = []
    for source in sources:
        row: dict[str, object] = {
            "key": source.key,
            "plate": source.plate,
            "well": source.well,
            "site": source.site,
        }
        for role, path in source.paths.items():
            row["file" if source.is_multichannel_file else f"file_{role}"] = path.name
        rows.append(row)
    table = pd.DataFrame(rows, columns=None if rows else ["key", "plate", "well", "site"])
    table["site"] = table["site"].astype("Int64")
    return table
