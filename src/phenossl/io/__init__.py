"""The Read stage: fields of view (TIFF / OME-TIFF, one file per field or per channel), treatment
metadata, and pre-cropped single cells. Pixels come out as (C, Y, X) fields or (N, C, H, W) crops,
always with their channel names."""

from phenossl.io.crops import CropSet, read_crops
from phenossl.io.fields import (
    Field,
    FieldSource,
    discover_fields,
    field_table,
    list_image_files,
    read_field,
    read_image_file,
    to_cyx,
)
from phenossl.io.filenames import ScreeningName, normalize_site, normalize_well, parse_screening_name
from phenossl.io.metadata import join_metadata, load_metadata, normalize_column_name

__all__ = [
    "CropSet",
    "Field",
    "FieldSource",
    "ScreeningName",
    "discover_fields",
    "field_table",
    "join_metadata",
    "list_image_files",
    "load_metadata",
    "normalize_column_name",
    "normalize_site",
    "normalize_well",
    "parse_screening_name",
    "read_crops",
    "read_field",
    "read_image_file",
    "to_cyx",
]
