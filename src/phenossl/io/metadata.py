"""Load a treatment table (compound, concentration, plate layout) and join it to fields or cells.

Treatment tables come from CellProfiler exports, LIMS dumps or hand-made spreadsheets, each with its
own column names and well spellings. ``load_metadata`` brings the names to one lower-snake-case form;
``join_metadata`` finds the keys both sides share (file names first, because they identify an image
exactly; then plate + well + site, plate + well, well), normalising wells and sites on both sides.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from phenossl.errors import InputError, MetadataJoinError
from phenossl.io.filenames import channel_key, normalize_site, normalize_well, parse_screening_name

logger = logging.getLogger(__name__)

KEY_SETS: tuple[tuple[str, ...], ...] = (("plate", "well", "site"), ("plate", "well"), ("well",))
"""Location keys ``on="auto"`` tries, in order, after file names."""
LOCATION_KEYS = ("plate", "well", "site")
_FILE_NAME = re.compile(r"\.[A-Za-z][A-Za-z0-9]{1,4}$")
_SEPARATOR = "\x1f"


# ---------------------------------------------------------------------------------------------------
# Column names


def normalize_column_name(name: str) -> str:
    """``Image_Metadata_Compound`` -> ``compound``, ``Image_Metadata_Plate_DAPI`` -> ``plate``,
    ``Image_FileName_DAPI`` -> ``file_name_dapi``, ``TableNumber`` -> ``table_number``.

    CellProfiler prefixes (``Image_``, ``Metadata_``) are dropped; a plate/well/site metadata column
    that CellProfiler suffixed with its channel (``_DAPI``) is the plate/well/site itself.
    """
    is_metadata, snake = _strip_prefixes(name)
    if is_metadata:
        head = snake.split("_", 1)[0]
        if head in LOCATION_KEYS:
            return head
    return snake


def _strip_prefixes(name: str) -> tuple[bool, str]:
    """(was it a CellProfiler metadata column, snake-case name without ``Image_``/``Metadata_``)."""
    text = re.sub(r"^Image_", "", str(name).strip())
    is_metadata = text.startswith("Metadata_")
    return is_metadata, _snake_case(re.sub(r"^Metadata_", "", text))


def _snake_case(text: str) -> str:
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z][a-z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[a-z])(?=[A-Z])", "_", text)
    text = re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_").lower()
    return text or "column"


def normalize_column_names(columns: Sequence[str]) -> list[str]:
    """Normalise every name; on a clash the first column keeps the short name, later ones their long
    name (``Image_Metadata_Plate_Actin`` -> ``plate_actin``), numbered if that is taken too."""
    result: list[str] = []
    for column in columns:
        name = normalize_column_name(column)
        if name in result:
            name = _strip_prefixes(column)[1]
        base, number = name, 2
        while name in result:
            name, number = f"{base}_{number}", number + 1
        result.append(name)
    return result


# ---------------------------------------------------------------------------------------------------
# Loading


#: columns a cell table or an export holds about the cell itself (ids, where it lies, where it came from) and
#: about its clustering: never a treatment
CELL_COLUMNS = frozenset({
    "cell_id", "label", "field_index", "image", "centroid_y", "centroid_x", "area", "padded", "crop_index",
    "source_file", "cluster", "cluster_name", "distance_to_centroid", "centroid_rank", "umap_x", "umap_y",
})


def treatment_column_names(columns: Sequence[str]) -> list[str]:
    """The columns of a joined metadata table or a cell table that describe a treatment (compound, dose,
    density...): what clusters are scored against. File names, plate coordinates and the cell's own columns
    (CELL_COLUMNS) are not treatments."""
    skip = {"key", "field", "plate", "well", "site"} | CELL_COLUMNS
    return [c for c in dict.fromkeys(columns) if c not in skip and not c.startswith("file")]


def load_metadata(csv_path: str | os.PathLike) -> pd.DataFrame:
    """Read a metadata CSV (TSV for ``.tsv``/``.tab``) with normalised column names.

    BBBC021-style tables name the site only inside the file names; when ``site`` (or ``well``) has no
    column, it is taken from the first file-name column whose names all parse as screening names,
    so that per-cell tables can still be joined on plate + well + site.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise InputError(f"Metadata file {path} does not exist. Check the path of the metadata table.")
    separator = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        table = pd.read_csv(path, sep=separator)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as error:
        raise InputError(
            f"Cannot read metadata table {path} ({type(error).__name__}: {error}). "
            "Give a comma-separated (or .tsv tab-separated) text table with a header row."
        ) from None
    if table.empty:
        raise InputError(f"Metadata table {path} has no rows.")
    raw_columns = [str(column) for column in table.columns]
    table.columns = normalize_column_names(raw_columns)
    raw_names = dict(zip(table.columns, raw_columns, strict=True))
    table = _add_location_from_file_names(table)
    table.attrs["raw_columns"] = raw_names  # the header's own spelling, for channel names (DAPI, not dapi)
    return table


def channel_names_from_file_columns(metadata: pd.DataFrame) -> dict[str, str]:
    """File-name channel token -> channel name, read from CellProfiler-style ``FileName_<channel>`` columns.

    BBBC021's ``Image_FileName_DAPI`` holds names like ``..._s1_w1<uuid>.tif``: every name parses to channel
    ``w1``, so ``w1`` is DAPI. A column counts only when all its names parse to one token; a token claimed
    by two columns (or a name given to two tokens) is ambiguous and left out. The name keeps the header's
    spelling (``DAPI``, not ``dapi``) when the table came from :func:`load_metadata`.
    """
    raw = metadata.attrs.get("raw_columns", {})
    found: dict[str, str] = {}
    clashes: set[str] = set()
    for column in metadata.columns:
        if not str(column).startswith("file_name_"):
            continue
        name = re.sub(r"(?i)^.*file_?name_?", "", str(raw.get(column, column))) or column.removeprefix("file_name_")
        names = metadata[column].dropna()
        if names.empty or not all(isinstance(value, str) for value in names):
            continue
        parsed = [parse_screening_name(value) for value in names]
        tokens = {channel_key(p.channel) for p in parsed if p is not None}
        if len(tokens) != 1 or any(p is None for p in parsed):
            continue
        token = tokens.pop()
        if token in found:
            clashes.add(token)
        found[token] = name
    names_used = [name for token, name in found.items() if token not in clashes]
    return {
        token: name for token, name in found.items() if token not in clashes and names_used.count(name) == 1
    }


def _add_location_from_file_names(table: pd.DataFrame) -> pd.DataFrame:
    missing = [key for key in ("well", "site") if key not in table.columns]
    if not missing:
        return table
    for column in _file_name_columns(table):
        parsed = table[column].map(lambda v: parse_screening_name(v) if isinstance(v, str) else None)
        if parsed.notna().all():
            table = table.copy()
            for key in missing:
                table[key] = parsed.map(lambda name, key=key: getattr(name, key))
            logger.info("Took %s from the file names in metadata column %r", " and ".join(missing), column)
            return table
    return table


# ---------------------------------------------------------------------------------------------------
# Joining


@dataclass(frozen=True)
class _Attempt:
    """One way of joining: which table columns meet which metadata columns, and how many rows meet."""

    table_columns: tuple[str, ...]
    metadata_columns: tuple[str, ...]
    table_keys: pd.Series
    metadata_keys: pd.Series
    matches: int

    @property
    def label(self) -> str:
        if self.table_columns == self.metadata_columns:
            return "+".join(self.table_columns)
        return f"{'+'.join(self.table_columns)} = metadata {'+'.join(self.metadata_columns)}"


def join_metadata(
    table: pd.DataFrame, metadata: pd.DataFrame | str | os.PathLike, on: str | Sequence[str] = "auto"
) -> pd.DataFrame:
    """Add the metadata's columns (compound, concentration...) to a per-field or per-cell ``table``.

    ``on="auto"`` joins through file names when a table column and a metadata column share file
    names, else on the first of plate+well+site, plate+well, well that both sides have and that
    matches; a list joins on those columns. Every table row is kept, in order (a left join).
    Where both sides have a column that is not a key, the metadata's value wins (it is the authority
    on plate names and treatments), so a plate guessed from a folder name becomes the real one.

    Raises MetadataJoinError when no row joins (naming the keys tried, with example values from
    each side) or when one table row matches several metadata rows. Rows that did not join are
    logged as a warning; ``result.attrs["metadata_join"]`` records the keys and counts.
    """
    if not isinstance(metadata, pd.DataFrame):
        metadata = load_metadata(metadata)
    if metadata.empty:
        raise MetadataJoinError("The metadata table has no rows; nothing can be joined.")
    attempts = _explicit_attempt(table, metadata, on) if not _is_auto(on) else _auto_attempts(table, metadata)
    chosen = next((attempt for attempt in attempts if attempt.matches > 0), None)
    if chosen is None:
        raise MetadataJoinError(_nothing_joined_message(table, metadata, attempts))
    result = _apply(table, metadata, chosen)
    _warn_if_fell_back(attempts, chosen, metadata, result)
    return result


def _warn_if_fell_back(attempts: list[_Attempt], chosen: _Attempt, metadata: pd.DataFrame,
                       result: pd.DataFrame) -> None:
    """A join on fewer location keys than both sides have (the well only, while both name plates). With a
    one-plate table that is the usual case of images whose plate name is their folder's (said at INFO);
    with several plates in the table, wells of another plate may have joined, so it is a warning."""
    fuller = [a for a in attempts[: attempts.index(chosen)] if set(chosen.table_columns) < set(a.table_columns)]
    if not fuller:
        return
    skipped = fuller[-1]
    ours = ", ".join(_show_key(k) for k in skipped.table_keys.dropna().unique()[:2])
    theirs = ", ".join(_show_key(k) for k in skipped.metadata_keys.dropna().unique()[:2])
    plates = metadata["plate"].nunique() if "plate" in metadata.columns else 0
    level = logging.WARNING if plates > 1 else logging.INFO
    logger.log(
        level,
        "The metadata joined on %s only: nothing matched on %s (these images have e.g. %s, the metadata %s). "
        "%s; its plate names replace the images'.",
        chosen.label, skipped.label, ours, theirs,
        f"Its {plates} plates may share well names: check that each image got its own plate's row"
        if plates > 1 else "The table holds one plate, taken to be these images'",
    )
    result.attrs["metadata_join"]["fell_back_from"] = skipped.label


def _is_auto(on: str | Sequence[str]) -> bool:
    return isinstance(on, str) and on == "auto"


def _explicit_attempt(table: pd.DataFrame, metadata: pd.DataFrame, on: str | Sequence[str]) -> list[_Attempt]:
    columns = (on,) if isinstance(on, str) else tuple(on)
    if not columns:
        raise MetadataJoinError("on=[] names no column to join on; give column names or 'auto'.")
    for side, frame in (("table", table), ("metadata", metadata)):
        absent = [column for column in columns if column not in frame.columns]
        if absent:
            raise MetadataJoinError(
                f"Cannot join on {list(columns)}: the {side} has no column {absent}. "
                f"Its columns are {list(frame.columns)}."
            )
    return [_attempt(table, metadata, columns, columns)]


def _auto_attempts(table: pd.DataFrame, metadata: pd.DataFrame) -> list[_Attempt]:
    """File-name pairings (best first), then the location key sets both sides have, in order."""
    file_attempts = [
        _attempt(table, metadata, (table_column,), (metadata_column,), file_names=True)
        for table_column in _file_name_columns(table)
        for metadata_column in _file_name_columns(metadata)
    ]
    file_attempts.sort(key=lambda attempt: -attempt.matches)  # stable: ties keep column order
    location_attempts = [
        _attempt(table, metadata, keys, keys)
        for keys in KEY_SETS
        if all(key in table.columns and key in metadata.columns for key in keys)
    ]
    return file_attempts + location_attempts


def file_name_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of ``frame`` that hold file names (what a join through file names pairs up)."""
    return _file_name_columns(frame)


def _file_name_columns(frame: pd.DataFrame) -> list[str]:
    """Columns whose values (nearly all) end in a file extension, e.g. ``Image_FileName_DAPI``."""
    columns = []
    for column in frame.columns:
        values = frame[column].dropna()
        if values.empty or not all(isinstance(value, str) for value in values.iloc[:20]):
            continue
        values = values.astype(str)
        if values.str.contains(_FILE_NAME).mean() >= 0.9:
            columns.append(column)
    return columns


def _attempt(
    table: pd.DataFrame,
    metadata: pd.DataFrame,
    table_columns: tuple[str, ...],
    metadata_columns: tuple[str, ...],
    *,
    file_names: bool = False,
) -> _Attempt:
    table_keys = _key_series(table, table_columns, file_names)
    metadata_keys = _key_series(metadata, metadata_columns, file_names)
    matches = int(table_keys.isin(set(metadata_keys.dropna())).sum())
    return _Attempt(table_columns, metadata_columns, table_keys, metadata_keys, matches)


def _key_series(frame: pd.DataFrame, columns: tuple[str, ...], file_names: bool) -> pd.Series:
    """One comparable string per row (None where any part is missing), normalised per key kind."""
    parts = [
        frame[column].map(lambda value, c=column: _normalize_value(value, c, file_names))
        for column in columns
    ]
    keys = parts[0].astype(object)
    for part in parts[1:]:
        keys = keys.combine(part, lambda a, b: None if a is None or b is None else f"{a}{_SEPARATOR}{b}")
    return keys


def _normalize_value(value: object, column: str, file_names: bool) -> str | None:
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    if file_names:
        return re.split(r"[\\/]", str(value).strip())[-1]
    if column == "well":
        return normalize_well(value)
    if column == "site":
        return normalize_site(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _apply(table: pd.DataFrame, metadata: pd.DataFrame, attempt: _Attempt) -> pd.DataFrame:
    matched = attempt.table_keys.isin(set(attempt.metadata_keys.dropna()))
    _check_unique(metadata, attempt, set(attempt.table_keys[matched]))
    keep = [c for c in metadata.columns if not (c in attempt.metadata_columns and c in attempt.table_columns)]
    lookup = metadata[keep].assign(_join_key=attempt.metadata_keys.values).dropna(subset=["_join_key"])
    lookup = lookup.drop_duplicates("_join_key").set_index("_join_key")
    added = lookup.reindex(attempt.table_keys.values)
    added.index = table.index
    result = table.copy()
    for column in keep:
        if column not in result.columns:
            result[column] = added[column]
            continue
        replace = matched & added[column].notna()
        differs = replace & (added[column].astype(str) != result[column].astype(str))
        if differs.any():
            example = differs.idxmax()
            logger.info(
                "Metadata replaced %d value(s) of column %r, e.g. %r -> %r",
                int(differs.sum()),
                column,
                result.at[example, column],
                added.at[example, column],
            )
        result[column] = added[column].where(replace, result[column])
    unmatched = int((~matched).sum())
    result.attrs["metadata_join"] = {
        "on": attempt.label,
        "matched": int(matched.sum()),
        "unmatched": unmatched,
    }
    if unmatched:
        example = attempt.table_keys[~matched].iloc[0]
        logger.warning(
            "%d of %d row(s) found no metadata row on %s (e.g. %s); their metadata columns are empty.",
            unmatched,
            len(table),
            attempt.label,
            _show_key(example),
        )
    return result


def _check_unique(metadata: pd.DataFrame, attempt: _Attempt, used_keys: set[str]) -> None:
    counts = attempt.metadata_keys[attempt.metadata_keys.isin(used_keys)].value_counts()
    duplicated = counts[counts > 1]
    if not duplicated.empty:
        key, count = duplicated.index[0], int(duplicated.iloc[0])
        raise MetadataJoinError(
            f"Joining on {attempt.label} is ambiguous: {len(duplicated)} key(s) match several metadata rows, "
            f"e.g. {_show_key(key)} matches {count} rows. Join on more columns (e.g. add site, or "
            "on=['plate', 'well', 'site']) or remove the duplicate rows from the metadata."
        )


def _show_key(key: object) -> str:
    return (
        "(" + ", ".join(repr(part) for part in str(key).split(_SEPARATOR)) + ")"
        if key is not None
        else "(missing)"
    )


def _nothing_joined_message(table: pd.DataFrame, metadata: pd.DataFrame, attempts: list[_Attempt]) -> str:
    if not attempts:
        return (
            "Cannot join the metadata: the two tables share no file-name column and no plate/well/site "
            f"columns. Table columns: {list(table.columns)}; metadata columns: {list(metadata.columns)}. "
            "Rename the columns or pass on=[...]."
        )
    lines = []
    for attempt in attempts:
        ours = [_show_key(k) for k in attempt.table_keys.dropna().unique()[:3]]
        theirs = [_show_key(k) for k in attempt.metadata_keys.dropna().unique()[:3]]
        lines.append(
            f"{attempt.label}: table has e.g. {', '.join(ours) or 'nothing'}; "
            f"metadata has e.g. {', '.join(theirs) or 'nothing'}"
        )
    return (
        "The metadata joins none of the "
        f"{len(table)} row(s). Tried " + "; ".join(lines) + ". Check that plate names and file names are "
        "spelled the same on both sides, or pass on=[...] with the columns to use."
    )
