"""Transform specs and named compositions: what a view is allowed to change, as reviewable YAML.

A composition is a list of transforms, each with its magnitude and a probability ``p`` drawn per sample.
The choice of composition decides what the representation becomes invariant to (Bendidi et al. 2024):
``morphology`` keeps the central cell and hides its orientation; ``context`` crops anywhere in the tile so
neighbours and density count. The specs are plain data; :mod:`phenossl.augment.pipeline` executes them.

There is no ``resize`` transform: the caller gives the output size (the training resolution) and resizing
to it is always the implicit last geometric step, folded into the single resampling.

YAML format (every value is written out by :meth:`Composition.to_yaml`)::

    name: morphology
    description: central cell, any orientation, independent stain intensities
    transforms:
      - kind: rotation
        p: 1.0
        degrees: 180.0          # any angle in [-degrees, degrees]; 180 = full circle
        multiples_of_90: false  # true: 0/90/180/270 only (exact, no interpolation)
      - kind: center_crop
        p: 1.0
        fraction: 0.5           # keep the central half of the tile's side
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from phenossl.atomic import atomic_write_text
from phenossl.errors import ConfigError

PRESETS_DIR = Path(__file__).parent / "presets"
IDENTITY_NAME = "none"

Probability = Annotated[
    float, Field(ge=0.0, le=1.0, description="chance, per sample, that the transform is applied")
]
FloatRange = tuple[float, float]


def _check_positive_range(name: str, value: FloatRange, *, high: float = math.inf) -> FloatRange:
    """Check a [min, max] pair: finite, ordered, 0 < min <= max <= high."""
    lo, hi = value
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo <= hi <= high):
        upper = "" if math.isinf(high) else f" <= {high:g}"
        raise ValueError(f"{name} must be [min, max] with 0 < min <= max{upper}, got [{lo:g}, {hi:g}]")
    return value


class _Spec(BaseModel):
    """Base of every spec: unknown keys rejected, values finite, immutable (safe to share and hash).

    Built from user input through :meth:`Composition.from_yaml` / :meth:`Composition.from_dict` /
    :func:`transform_from_dict` / :func:`load_composition`, which raise ConfigError; constructing a spec
    directly in Python raises pydantic's ValidationError as usual.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Rotation(_Spec):
    """Rotate about the tile centre (the nucleus) by an angle in [-degrees, degrees], counter-clockwise."""

    kind: Literal["rotation"] = "rotation"
    p: Probability = 1.0
    degrees: float = Field(180.0, gt=0.0, le=180.0, description="largest angle; 180 covers the full circle")
    multiples_of_90: bool = Field(False, description="draw 0/90/180/270 only: exact, no interpolation blur")

    @model_validator(mode="after")
    def _degrees_unused_with_multiples(self) -> Rotation:
        if self.multiples_of_90 and self.degrees != 180.0:
            raise ValueError(
                "degrees has no effect with multiples_of_90: true (it draws 0/90/180/270); remove it"
            )
        return self


#: ``center_crop.fraction: auto`` keeps this many nucleus diameters around the centre (a cell is about three
#: nuclei across), as a fraction of the tile, between AUTO_CROP_RANGE: at most 1/sqrt(2), so that a rotated
#: tile's empty corners never show. The nuclei are measured in the tile store (:func:`auto_crop_fraction`).
AUTO_CROP_DIAMETERS = 3.0
AUTO_CROP_RANGE = (0.2, 0.707)


class CenterCrop(_Spec):
    """Keep ``fraction`` of the side around the centre: tiles are centred on a nucleus, so this is the cell.

    Placed after a rotation, fractions <= 1/sqrt(2) (0.707) never show the empty corners of the rotated tile.
    ``auto`` keeps about three nucleus diameters, measured on the tiles it is used with (see
    :data:`AUTO_CROP_DIAMETERS`): the crop then suits 68 px pre-cropped cells and 196 px tiles alike.
    """

    kind: Literal["center_crop"] = "center_crop"
    p: Probability = 1.0
    fraction: float | Literal["auto"] = Field(
        "auto", description="kept fraction of the side (0.5 of 196 px = 98 px), or auto: about three nucleus "
        "diameters, from the tiles' nuclei"
    )

    @field_validator("fraction")
    @classmethod
    def _fraction_in_unit_interval(cls, value: float | str) -> float | str:
        if value != "auto" and not 0.0 < float(value) <= 1.0:
            raise ValueError(f"fraction must be auto or in (0, 1], got {value}")
        return value


class RandomCrop(_Spec):
    """Random resized crop: area ``scale`` of the tile, width/height ``ratio``, any position inside it."""

    kind: Literal["random_crop"] = "random_crop"
    p: Probability = 1.0
    scale: FloatRange = (0.2, 1.0)
    ratio: FloatRange = (3 / 4, 4 / 3)

    @field_validator("scale")
    @classmethod
    def _scale_in_unit_interval(cls, value: FloatRange) -> FloatRange:
        return _check_positive_range("scale (fraction of the tile's area)", value, high=1.0)

    @field_validator("ratio")
    @classmethod
    def _ratio_positive(cls, value: FloatRange) -> FloatRange:
        return _check_positive_range("ratio (width / height)", value)


class Flip(_Spec):
    """Mirror left-right and/or top-bottom, each direction drawn on its own with probability p."""

    kind: Literal["flip"] = "flip"
    p: Probability = 0.5
    horizontal: bool = True
    vertical: bool = True

    @model_validator(mode="after")
    def _some_direction(self) -> Flip:
        if not (self.horizontal or self.vertical):
            raise ValueError("a flip needs horizontal: true and/or vertical: true")
        return self


class Affine(_Spec):
    """Translate (fraction of the side), zoom (``scale`` > 1 enlarges) and shear (degrees, in x and in y)."""

    kind: Literal["affine"] = "affine"
    p: Probability = 0.5
    translate: float = Field(0.1, ge=0.0, le=1.0, description="largest shift, as a fraction of the side")
    scale: FloatRange = (0.9, 1.1)
    shear: float = Field(
        10.0, ge=0.0, lt=90.0, description="largest shear angle in degrees, x and y drawn apart"
    )

    @field_validator("scale")
    @classmethod
    def _scale_positive(cls, value: FloatRange) -> FloatRange:
        return _check_positive_range("scale (zoom factor)", value)


class Intensity(_Spec):
    """Stain-intensity jitter for normalised fluorescence (~[0, 1]): ``(max(x,0)^gamma + min(x,0)) * c + b``.

    No hue or saturation: channels are independent stains, not RGB. With ``per_channel`` each stain gets its
    own factors, as staining and exposure vary per channel. The gamma touches only the positive part, so
    background values below zero stay finite and unchanged.
    """

    kind: Literal["intensity"] = "intensity"
    p: Probability = 0.8
    brightness: float = Field(0.1, ge=0.0, le=1.0, description="additive offset drawn in [-b, b]")
    contrast: float = Field(0.2, ge=0.0, lt=1.0, description="multiplicative factor drawn in [1-c, 1+c]")
    gamma: FloatRange = (0.8, 1.25)
    per_channel: bool = True

    @field_validator("gamma")
    @classmethod
    def _gamma_positive(cls, value: FloatRange) -> FloatRange:
        return _check_positive_range("gamma", value)


class Blur(_Spec):
    """Gaussian blur, sigma (output pixels) drawn per sample: focus and optics vary between fields."""

    kind: Literal["blur"] = "blur"
    p: Probability = 0.5
    sigma: FloatRange = (0.1, 2.0)

    @field_validator("sigma")
    @classmethod
    def _sigma_positive(cls, value: FloatRange) -> FloatRange:
        return _check_positive_range("sigma (output pixels)", value)


class Erasing(_Spec):
    """Random erasing: fill a box (area ``scale`` of the view, width/height ``ratio``) with ``value``."""

    kind: Literal["erasing"] = "erasing"
    p: Probability = 0.5
    scale: FloatRange = (0.02, 0.33)
    ratio: FloatRange = (0.3, 3.3)
    value: float = Field(0.0, description="fill value (0 = background after normalisation)")

    @field_validator("scale")
    @classmethod
    def _scale_in_unit_interval(cls, value: FloatRange) -> FloatRange:
        return _check_positive_range("scale (fraction of the view's area)", value, high=1.0)

    @field_validator("ratio")
    @classmethod
    def _ratio_positive(cls, value: FloatRange) -> FloatRange:
        return _check_positive_range("ratio (width / height)", value)


TRANSFORM_TYPES: dict[str, type[_Spec]] = {
    "rotation": Rotation,
    "center_crop": CenterCrop,
    "random_crop": RandomCrop,
    "flip": Flip,
    "affine": Affine,
    "intensity": Intensity,
    "blur": Blur,
    "erasing": Erasing,
}
GEOMETRIC_KINDS = frozenset({"rotation", "center_crop", "random_crop", "flip", "affine"})

AnyTransform = Rotation | CenterCrop | RandomCrop | Flip | Affine | Intensity | Blur | Erasing
TransformSpec = Annotated[AnyTransform, Field(discriminator="kind")]
_TRANSFORM_ADAPTER: TypeAdapter[AnyTransform] = TypeAdapter(TransformSpec)


class Composition(_Spec):
    """A named list of transforms: geometric ones composed in list order, then pixel-level ones in order."""

    name: str = Field(min_length=1)
    description: str = ""
    transforms: tuple[TransformSpec, ...] = ()

    def to_yaml(self) -> str:
        """The composition as YAML, every value written out (so a saved run says exactly what it used)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, width=110)

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "YAML text") -> Composition:
        """Parse YAML text (``source`` names it in error messages)."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"{source} is not valid YAML: {error}") from None
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "composition") -> Composition:
        """Validate a mapping (as read from YAML or JSON); raises ConfigError naming every problem."""
        if not isinstance(data, dict):
            raise ConfigError(
                f"{source} must be a mapping with 'name' and 'transforms', got {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ConfigError(describe_validation_error(error, source)) from None


def transform_from_dict(data: Any, *, source: str = "transform") -> AnyTransform:
    """Validate one transform mapping (``{'kind': 'rotation', 'degrees': 90}``), e.g. from a widget's form;
    raises ConfigError."""
    try:
        return _TRANSFORM_ADAPTER.validate_python(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, source)) from None


PRESETS: tuple[str, ...] = (IDENTITY_NAME, *sorted(path.stem for path in PRESETS_DIR.glob("*.yaml")))


def kept_fraction(transforms) -> float:
    """Side fraction of the tile that the deterministic (embedding) view keeps: the product of the centre
    crops drawn at least half the time, i.e. what most training views showed (1.0: the whole tile)."""
    crops = [t for t in transforms if t.kind == "center_crop" and t.p >= 0.5]
    return math.prod(AUTO_CROP_RANGE[1] if t.fraction == "auto" else t.fraction for t in crops)


def auto_crop_fraction(nucleus_diameter: float, tile_size: int) -> float:
    """The centre-crop fraction that keeps AUTO_CROP_DIAMETERS nucleus diameters of a ``tile_size`` tile."""
    low, high = AUTO_CROP_RANGE
    return round(min(high, max(low, AUTO_CROP_DIAMETERS * nucleus_diameter / tile_size)), 3)


def resolve_composition(composition: Composition, nucleus_diameter: float | None, tile_size: int | None) -> Composition:
    """``composition`` with every ``fraction: auto`` centre crop made a number for these tiles (unchanged if it
    has none). Without a measured diameter, auto keeps the largest fraction (AUTO_CROP_RANGE's top): what the
    augmentation applies when it is handed an unresolved composition (training resolves for its store first)."""
    if not any(t.kind == "center_crop" and t.fraction == "auto" for t in composition.transforms):
        return composition
    fraction = AUTO_CROP_RANGE[1] if not nucleus_diameter or not tile_size else \
        auto_crop_fraction(nucleus_diameter, tile_size)
    transforms = tuple(t.model_copy(update={"fraction": fraction}) if t.kind == "center_crop" and t.fraction == "auto"
                       else t for t in composition.transforms)
    return composition.model_copy(update={"transforms": transforms})


def identity_composition() -> Composition:
    """The composition that changes nothing but the size: baselines and tests."""
    return Composition(name=IDENTITY_NAME, description="no augmentation: the tile resized to the output size")


def load_composition(name_or_path: str | os.PathLike[str]) -> Composition:
    """A built-in preset by name (see ``PRESETS``) or a composition YAML file by path."""
    key = os.fspath(name_or_path)
    if key == IDENTITY_NAME:
        return identity_composition()
    path = PRESETS_DIR / f"{key}.yaml" if key in PRESETS else Path(key)
    if not path.is_file():
        raise ConfigError(
            f"unknown composition {key!r}: it is neither a built-in preset ({', '.join(PRESETS)})"
            " nor a YAML file. Give a preset name or the path of a composition file."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read composition file {path}: {error}") from None
    return Composition.from_yaml(text, source=f"composition file {path}")


def save_composition(composition: Composition, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write a composition as YAML (atomically; refuses to replace a file unless ``overwrite``)."""
    return atomic_write_text(path, composition.to_yaml(), overwrite=overwrite)


def describe_validation_error(error: ValidationError, source: str) -> str:
    """Turn pydantic's report into lines a user can act on: where, what is wrong, what is allowed."""
    lines = [f"invalid {source}:"]
    for item in error.errors(include_url=False):
        where, kind = _describe_location(item["loc"])
        lines.append(f"  {where or '(top level)'}: {_describe_problem(item, kind)}")
    return "\n".join(lines)


def _describe_location(loc: tuple[Any, ...]) -> tuple[str, str | None]:
    """('transforms', 0, 'rotation', 'degrees') -> ('transforms[0] (rotation).degrees', 'rotation')."""
    text, kind = "", None
    for index, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in TRANSFORM_TYPES and (index == 0 or isinstance(loc[index - 1], int)):
            kind = part
            text += f" ({part})" if text else f"({part})"
        else:
            text += f".{part}" if text else str(part)
    return text, kind


def _describe_problem(item: dict[str, Any], kind: str | None) -> str:
    known_kinds = ", ".join(TRANSFORM_TYPES)
    if item["type"] == "extra_forbidden":
        fields = TRANSFORM_TYPES[kind].model_fields if kind else Composition.model_fields
        return f"unknown key {item['loc'][-1]!r}; allowed keys: {', '.join(fields)}"
    if item["type"] == "union_tag_invalid":
        tag = item["ctx"]["tag"]
        hint = (
            " (no resize transform: the output size is the training resolution, resizing is implicit)"
            if tag == "resize"
            else ""
        )
        return f"unknown transform kind {tag!r}; known kinds: {known_kinds}{hint}"
    if item["type"] == "union_tag_not_found":
        return f"each transform needs a 'kind' (one of: {known_kinds})"
    if item["type"] in ("tuple_type", "too_short", "too_long"):
        return f"expected a [min, max] pair (got {item['input']!r})"
    message = str(item["msg"]).removeprefix("Value error, ")
    if item["type"].startswith(("greater", "less", "finite", "float", "bool", "string")):
        message += f" (got {item['input']!r})"
    return message
