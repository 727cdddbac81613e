"""Naming rules of fields and channels: which role (DNA, tubulin, ...) each channel plays, what a field is
called (its file stem, with the plate in front only when two plates share a stem), and the well and site a
multi-channel file's name gives."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from phenossl.errors import ConfigError, InputError
from phenossl.io.filenames import channel_key, natural_sort_key, normalize_well

# The logger users filter on; these messages were logged by phenossl.io.fields before it was split.
logger = logging.getLogger("phenossl.io.fields")

ChannelNames = Sequence[str] | Mapping[str | int, str] | None
"""Channel roles: names in channel order, or a mapping from channel token / index to name."""

_FIELD_IN_NAME = re.compile(r"(?:^|_)(?P<well>[A-Za-z]{1,2}\d{1,3})_s(?P<site>\d+)(?=[_.]|$)")


def field_key(stem: str, plate: str | None, stem_counts: Counter) -> str:
    """A field's key: its stem, or ``<plate>/<stem>`` when fields of several plates share that stem."""
    return stem if stem_counts[stem] == 1 else f"{plate}/{stem}"


def well_and_site(stem: str) -> tuple[str | None, int | None]:
    """The well and site in a multi-channel file's name (``..._B03_s2...``), or None for each when absent."""
    match = _FIELD_IN_NAME.search(stem)
    if match is None:
        return None, None
    return normalize_well(match.group("well")), int(match.group("site"))


def strip_tiff_suffix(name: str) -> str:
    """A file name without .tif / .tiff / .ome.tif: the stem a multi-channel field is named by."""
    return re.sub(r"(\.ome)?\.tiff?$", "", name, flags=re.IGNORECASE)


def describe_channel(role: str, token: str) -> str:
    """A channel as an error message names it: its role, and its file token when that differs."""
    return repr(role) if role == token else f"{role!r} ({token})"


def resolve_token_names(tokens: dict[str, str], channel_names: ChannelNames) -> list[tuple[str, str]]:
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
    check_unique_roles([role for _, role in pairs])
    return pairs


def check_unique_roles(roles: list[str]) -> None:
    """Two channels with one name could not be told apart later: ConfigError."""
    duplicates = sorted({role for role in roles if roles.count(role) > 1})
    if duplicates:
        raise ConfigError(
            f"channel_names gives the name(s) {duplicates} to more than one channel; names must differ."
        )


def multichannel_roles(
    channel_names: ChannelNames,
) -> tuple[tuple[str, ...] | None, tuple[tuple[str, str], ...] | None]:
    """The user's channel names for multi-channel files: (names in channel order, None) or (None, mapping)."""
    names, channel_map = None, None
    if isinstance(channel_names, str):
        resolve_token_names({}, channel_names)  # raises the ConfigError for a bare string
    elif isinstance(channel_names, Mapping):
        channel_map = tuple((str(index), str(role)) for index, role in channel_names.items())
        check_unique_roles([role for _, role in channel_map])
    elif channel_names is not None:
        names = tuple(str(name) for name in channel_names)
        check_unique_roles(list(names))
    return names, channel_map


def channel_position(key: str, available: list[str], path: Path) -> int:
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
