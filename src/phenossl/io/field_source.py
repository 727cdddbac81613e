"""What a field is: where its pixels are (``FieldSource``, nothing loaded), its pixels once read (``Field``),
and the per-field table that metadata is joined to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from phenossl.errors import InputError
from phenossl.io.images import ChannelAxis

MULTICHANNEL_KEY = "all"
"""The ``FieldSource.paths`` key of a field stored as one multi-channel file."""


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
    member: str | None = None

    @property
    def is_multichannel_file(self) -> bool:
        return list(self.paths) == [MULTICHANNEL_KEY]

    @property
    def source_files(self) -> tuple[Path, ...]:
        return tuple(self.paths.values())


@dataclass
class Field:
    """One field's pixels, ``image`` (C, Y, X) in the file's own dtype, with the names of its channels.

    ``pixel_size`` is (y, x) in micrometres when the file's metadata says it (OME, ND2, CZI, LIF, OME-Zarr).
    """

    image: np.ndarray
    channel_names: list[str]
    key: str
    plate: str | None = None
    well: str | None = None
    site: int | None = None
    source_files: tuple[Path, ...] = field(default_factory=tuple)
    pixel_size: tuple[float, float] | None = None

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
