"""Parse the file names that screening microscopes write, so that one file per channel can be grouped
back into fields (plate, well, site) without any metadata file.

Everything here is pure (strings in, values out): no file system access.

Known layouts
-------------
- ``bbbc021``: ``[<prefix>_]<well>_s<site>_w<channel><uuid>.tif``, e.g.
  ``Week1_150607_C02_s3_w1E54F0108-F44A-4F6E-9637-6A9DE80F0823.tif`` or ``G10_s1_w1BEDC2073-....tif``.
  The uuid is always 36 characters, which is what separates ``w2`` from a uuid starting with a digit
  (``w21E85592E-...`` is channel ``w2``).
- ``imagexpress``: ``[<prefix>_]<well>_s<site>_w<channel>[<uuid>].tif``, e.g. ``Plate1_A01_s1_w1.tif``.
- a user regex with named groups ``well`` and ``channel`` (required), ``site`` and ``plate`` (optional).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from phenossl.errors import ConfigError

_UUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_HEAD = r"^(?:(?P<prefix>.*)_)?(?P<well>[A-Za-z]{1,2}\d{1,3})_s(?P<site>\d+)_(?P<channel>[wW]\d+)"
_TIFF_END = r"\.(?:ome\.)?tiff?$"

PRESET_PATTERNS: dict[str, re.Pattern[str]] = {
    "bbbc021": re.compile(_HEAD + f"(?P<uuid>{_UUID})" + _TIFF_END, re.IGNORECASE),
    "imagexpress": re.compile(_HEAD + f"(?P<uuid>{_UUID})?" + _TIFF_END, re.IGNORECASE),
}
"""Named layouts; ``auto`` tries them in this order (the first is the stricter one)."""

_REQUIRED_GROUPS = ("well", "channel")
_WELL = re.compile(r"^([A-Za-z]{1,2})0*(\d{1,3})$")
_ROW_COL_WELL = re.compile(r"^[Rr]0*(\d{1,2})[Cc]0*(\d{1,3})$")  # Operetta / Opera Phenix "r01c01"
_SITE = re.compile(r"^(?:[sSfF](?:ite|ield)?)?_?0*(\d+)$")
_CHANNEL_NUMBER = re.compile(r"^[wW]?0*(\d+)$")

Pattern = str | re.Pattern[str]


@dataclass(frozen=True)
class ScreeningName:
    """What a screening file name says about its image. ``well`` is normalised (``A01``)."""

    prefix: str
    well: str
    site: int
    channel: str
    plate: str | None = None

    @property
    def field_stem(self) -> str:
        """The name shared by all channel files of one field, e.g. ``Week1_150607_C02_s3``."""
        head = f"{self.prefix}_" if self.prefix else ""
        return f"{head}{self.well}_s{self.site}"


def normalize_well(value: object) -> str:
    """``a1``, ``A1``, ``A01``, ``r01c01`` -> ``A01``; anything that is not a well is returned stripped.

    Wells are written differently by every instrument and by people typing metadata tables; one
    canonical spelling is what lets file names and tables meet. Unknown spellings are left alone (not
    rejected) so that a join can still report them as examples.
    """
    text = str(value).strip()
    match = _WELL.match(text)
    if match:
        return f"{match.group(1).upper()}{int(match.group(2)):02d}"
    match = _ROW_COL_WELL.match(text)
    if match and 1 <= int(match.group(1)) <= 26:
        return f"{chr(ord('A') + int(match.group(1)) - 1)}{int(match.group(2)):02d}"
    return text


def normalize_site(value: object) -> str:
    """``s3``, ``3``, ``3.0``, ``site3``, ``f03`` -> ``"3"``: one spelling for joining tables on the site."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    match = _SITE.match(text)
    return str(int(match.group(1))) if match else text


def channel_key(token: str) -> str:
    """A comparison key for channel tokens, so that ``w1``, ``W1``, ``1`` and ``w01`` are one channel."""
    match = _CHANNEL_NUMBER.match(token.strip())
    return f"w{int(match.group(1))}" if match else token.strip().lower()


def natural_sort_key(text: str) -> tuple:
    """Sort ``w2`` before ``w10`` and ``cell_9`` before ``cell_10`` (plain sorting does not)."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text))


def compile_pattern(pattern: Pattern) -> list[re.Pattern[str]]:
    """Turn ``"auto"``, a preset name or a user regex into the regexes to try, checking the groups.

    Raises ConfigError for an invalid regex or one without the ``well`` and ``channel`` groups, since
    without them files cannot be grouped into fields.
    """
    if isinstance(pattern, str) and pattern.lower() == "auto":
        return list(PRESET_PATTERNS.values())
    if isinstance(pattern, str) and pattern.lower() in PRESET_PATTERNS:
        return [PRESET_PATTERNS[pattern.lower()]]
    if isinstance(pattern, str):
        try:
            compiled = re.compile(pattern)
        except re.error as error:
            raise ConfigError(
                f"File name pattern {pattern!r} is not a valid regular expression ({error}). Use 'auto', "
                f"one of {sorted(PRESET_PATTERNS)}, or a regex with named groups, e.g. "
                r"'(?P<well>[A-P]\d+)_s(?P<site>\d+)_w(?P<channel>\d)'."
            ) from None
    elif isinstance(pattern, re.Pattern):
        compiled = pattern
    else:
        raise ConfigError(
            f"File name pattern must be a string or a compiled regex, not {type(pattern).__name__}."
        )
    missing = [group for group in _REQUIRED_GROUPS if group not in compiled.groupindex]
    if missing:
        raise ConfigError(
            f"File name pattern {compiled.pattern!r} has no named group {', '.join(missing)}. "
            "Name the parts of the file name with (?P<well>...), (?P<channel>...) and optionally "
            "(?P<site>...) and (?P<plate>...)."
        )
    return [compiled]


def parse_screening_name(name: str, pattern: Pattern = "auto") -> ScreeningName | None:
    """Read well, site and channel (and plate or prefix where present) from a file name.

    ``name`` may be a bare file name or a path (only the last part is read). Returns None when the name
    does not follow the pattern, so callers can decide whether that is an error. A user regex is
    *searched* in the name (anchor it with ``^...$`` to require a full match); a missing ``site`` group
    means site 1.
    """
    base = re.split(r"[\\/]", str(name))[-1]
    for regex in compile_pattern(pattern):
        match = regex.search(base)
        if match:
            return _from_match(match)
    return None


def _from_match(match: re.Match[str]) -> ScreeningName:
    groups = match.groupdict()
    site_text = groups.get("site")
    site = int(normalize_site(site_text)) if site_text and normalize_site(site_text).isdigit() else 1
    plate = groups.get("plate")
    return ScreeningName(
        prefix=groups.get("prefix") or "",
        well=normalize_well(groups["well"]),
        site=site,
        channel=groups["channel"],
        plate=plate or None,
    )
