"""Screening file names: the layouts real instruments write, and the spellings people type."""

from __future__ import annotations

import re

import pytest

from phenossl.errors import ConfigError
from phenossl.io.filenames import (
    ScreeningName,
    channel_key,
    natural_sort_key,
    normalize_site,
    normalize_well,
    parse_screening_name,
)

BBBC021_DAPI = "Week1_150607_C02_s3_w1E54F0108-F44A-4F6E-9637-6A9DE80F0823.tif"


def test_bbbc021_name_with_prefix():
    assert parse_screening_name(BBBC021_DAPI) == ScreeningName(
        prefix="Week1_150607", well="C02", site=3, channel="w1"
    )
    assert parse_screening_name(BBBC021_DAPI).field_stem == "Week1_150607_C02_s3"


def test_bbbc021_uuid_starting_with_a_digit_does_not_change_the_channel():
    name = parse_screening_name("Week1_150607_C02_s3_w21E85592E-94B0-43AF-8EDA-40624931EA89.tif", "bbbc021")
    assert name.channel == "w2"


def test_bbbc021_name_without_prefix_and_with_a_path():
    name = parse_screening_name("Week4/Week4_27481/G10_s1_w1BEDC2073-A983-4B98-95E9-84466707A25D.tif")
    assert (name.prefix, name.well, name.site, name.channel) == ("", "G10", 1, "w1")
    assert name.field_stem == "G10_s1"


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("Plate1_A01_s1_w1.tif", ("Plate1", "A01", 1, "w1")),
        ("Plate1_A01_s1_w1B5A0B2C1-1111-2222-3333-444455556666.TIF", ("Plate1", "A01", 1, "w1")),
        ("a1_s12_w3.tiff", ("", "A01", 12, "w3")),
        ("scan_2024_P24_s2_w2.ome.tif", ("scan_2024", "P24", 2, "w2")),
    ],
)
def test_imagexpress_names(file_name, expected):
    name = parse_screening_name(file_name, "imagexpress")
    assert (name.prefix, name.well, name.site, name.channel) == expected


def test_bbbc021_pattern_requires_the_uuid():
    assert parse_screening_name("Plate1_A01_s1_w1.tif", "bbbc021") is None


@pytest.mark.parametrize(
    "file_name",
    ["notes.tif", "A01_s1_w1_thumb8A2B3C4D-1111-2222-3333-444455556666.tif", "A01_s1_w1.png", "A01_w1.tif"],
)
def test_other_names_do_not_parse(file_name):
    assert parse_screening_name(file_name) is None


def test_user_regex_with_plate_group():
    pattern = r"^(?P<plate>P\d+)-(?P<well>[A-P]\d+)-f(?P<site>\d+)-ch(?P<channel>\d)\.tif$"
    name = parse_screening_name("P7-B3-f02-ch2.tif", pattern)
    assert name == ScreeningName(prefix="", well="B03", site=2, channel="2", plate="P7")


def test_user_regex_without_site_means_site_one_and_accepts_compiled_patterns():
    name = parse_screening_name("img_C5_dapi.tif", re.compile(r"_(?P<well>[A-H]\d+)_(?P<channel>\w+)\.tif$"))
    assert (name.well, name.site, name.channel) == ("C05", 1, "dapi")


def test_user_regex_missing_groups_is_a_config_error():
    with pytest.raises(ConfigError, match="channel"):
        parse_screening_name("A01.tif", r"(?P<well>[A-H]\d+)")


def test_invalid_user_regex_is_a_config_error():
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        parse_screening_name("A01.tif", r"(?P<well>[A-H")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a1", "A01"),
        ("A1", "A01"),
        ("A01", "A01"),
        (" b12 ", "B12"),
        ("H012", "H12"),
        ("AA3", "AA03"),
        ("r02c03", "B03"),
        ("unknown", "unknown"),
    ],
)
def test_normalize_well(raw, expected):
    assert normalize_well(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [("s3", "3"), (3, "3"), (3.0, "3"), ("site03", "3"), ("f2", "2"), ("x", "x")]
)
def test_normalize_site(raw, expected):
    assert normalize_site(raw) == expected


def test_channel_key_treats_spellings_of_one_channel_alike():
    assert channel_key("w1") == channel_key("W01") == channel_key("1") == "w1"
    assert channel_key("DAPI") == "dapi"


def test_natural_sort_puts_w2_before_w10():
    assert sorted(["w10", "w2", "w1"], key=natural_sort_key) == ["w1", "w2", "w10"]
