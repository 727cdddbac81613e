"""What a composition panel edits: one row per transform kind (on/off, a magnitude, a probability).

A registry of knobs names, for each kind of ``phenossl.augment.specs``, the one number its row edits
and the range that makes sense; the panel is built from it, so a new transform kind is a one-place
change. Every other field of a spec is kept as the preset (or the spec's defaults) gave it, and every
edit goes through the core's validation (``transform_from_dict``), so a panel can never make a
composition the CLI would reject. Pure: no Qt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from phenossl.augment.specs import (
    IDENTITY_NAME,
    PRESETS,
    TRANSFORM_TYPES,
    Composition,
    load_composition,
    transform_from_dict,
)

EDITED_SUFFIX = "-edited"


@dataclass(frozen=True)
class Knob:
    """The magnitude a panel row edits for one transform kind."""

    kind: str
    label: str
    field: str | None  # spec field set by the magnitude; None: the row has a probability only
    element: int | None  # which end of a [min, max] range the magnitude sets
    minimum: float = 0.0
    maximum: float = 1.0
    step: float = 0.05
    decimals: int = 2
    suffix: str = ""
    help: str = ""
    option: str | None = None  # a boolean field shown as a check box (rotation: 90-degree steps)
    option_label: str = ""
    special: str | None = None  # a word the field may hold instead of a number (centre crop: "auto"),
    # shown one step below ``minimum``

    @property
    def special_value(self) -> float:
        return round(self.minimum - self.step, self.decimals)


KNOBS: dict[str, Knob] = {
    knob.kind: knob
    for knob in (
        Knob(
            "rotation",
            "Rotation",
            "degrees",
            None,
            1,
            180,
            5,
            0,
            "° max",
            "Largest rotation angle either way; 180° = any orientation (the cell's orientation is hidden).",
            option="multiples_of_90",
            option_label="90° only",
        ),
        Knob(
            "center_crop",
            "Centre crop",
            "fraction",
            None,
            0.1,
            1.0,
            0.05,
            2,
            " of side",
            "Keep this fraction of the tile's side around the nucleus: the central cell, not its neighbours. "
            "auto (the lowest value): about three nucleus diameters, measured on your tiles.",
            special="auto",
        ),
        Knob(
            "random_crop",
            "Random crop",
            "scale",
            0,
            0.05,
            1.0,
            0.05,
            2,
            " min area",
            "Smallest crop area (fraction of the tile), anywhere in the tile: neighbours and density count.",
        ),
        Knob(
            "flip",
            "Flips",
            None,
            None,
            help="Mirror left-right and top-bottom (each drawn with the probability).",
        ),
        Knob(
            "affine",
            "Affine",
            "translate",
            None,
            0.0,
            0.5,
            0.02,
            2,
            " shift",
            "Largest shift as a fraction of the side (zoom and shear keep the preset's values).",
        ),
        Knob(
            "intensity",
            "Intensity",
            "contrast",
            None,
            0.0,
            0.95,
            0.05,
            2,
            " contrast",
            "Per-stain contrast jitter (brightness and gamma keep the preset's values).",
        ),
        Knob("blur", "Blur", "sigma", 1, 0.1, 5.0, 0.1, 1, " px σ", "Largest Gaussian blur sigma (pixels)."),
        Knob(
            "erasing",
            "Erasing",
            "scale",
            1,
            0.02,
            0.9,
            0.02,
            2,
            " max area",
            "Largest erased box, as a fraction of the view's area.",
        ),
    )
}
assert set(KNOBS) == set(TRANSFORM_TYPES), "every transform kind needs a knob"


def magnitude(spec: Any) -> float | None:
    """The number the knob of ``spec.kind`` shows."""
    knob = KNOBS[spec.kind]
    if knob.field is None:
        return None
    value = getattr(spec, knob.field)
    if knob.special is not None and value == knob.special:
        return knob.special_value
    return float(value if knob.element is None else value[knob.element])


def with_magnitude(spec: Any, value: float) -> Any:
    """``spec`` with its knob's field set to ``value`` (a [min, max] range keeps the other end, moved if
    it would cross). Raises ConfigError for values the core rejects."""
    knob = KNOBS[spec.kind]
    if knob.field is None:
        return spec
    if knob.special is not None and value <= knob.special_value + 1e-9:
        new = knob.special
    elif knob.element is None:
        new = float(value)
    else:
        low, high = getattr(spec, knob.field)
        new = (min(low, value), float(value)) if knob.element == 1 else (float(value), max(high, value))
    return _validated(spec, {knob.field: new})


def with_probability(spec: Any, p: float) -> Any:
    return _validated(spec, {"p": float(p)})


def with_option(spec: Any, on: bool) -> Any:
    """Set the knob's boolean option (rotation: 90-degree steps, which needs degrees at 180)."""
    knob = KNOBS[spec.kind]
    if knob.option is None:
        return spec
    update: dict[str, Any] = {knob.option: bool(on)}
    if spec.kind == "rotation" and on:
        update["degrees"] = 180.0
    return _validated(spec, update)


def _validated(spec: Any, update: dict[str, Any]) -> Any:
    data = spec.model_dump(mode="json")
    data.update(update)
    return transform_from_dict(data, source=f"{KNOBS[spec.kind].label} settings")


@dataclass
class CompositionDraft:
    """Every transform kind, on or off, in the order the transforms run; ``composition()`` is the result.

    Kinds of the loaded composition keep its order (rotation before or after a crop changes the views);
    the others follow in the registry's order. A composition that repeats a kind keeps its first one.
    """

    name: str
    description: str = ""
    order: list[str] = field(default_factory=lambda: list(KNOBS))
    specs: dict[str, Any] = field(default_factory=dict)
    enabled: dict[str, bool] = field(default_factory=dict)
    base: str = ""  # the preset it started from

    @classmethod
    def from_composition(cls, composition: Composition, base: str | None = None) -> CompositionDraft:
        specs: dict[str, Any] = {}
        for spec in composition.transforms:
            specs.setdefault(spec.kind, spec)
        order = list(specs) + [kind for kind in KNOBS if kind not in specs]
        enabled = {kind: kind in specs for kind in KNOBS}
        for kind in KNOBS:
            specs.setdefault(kind, TRANSFORM_TYPES[kind]())
        return cls(composition.name, composition.description, order, specs, enabled, base or composition.name)

    @classmethod
    def from_preset(cls, name: str) -> CompositionDraft:
        return cls.from_composition(load_composition(name), base=name)

    def _edited(self) -> None:
        if not self.name.endswith(EDITED_SUFFIX):
            self.name = f"{self.base or 'custom'}{EDITED_SUFFIX}"
            self.description = f"{self.base or 'custom'} with changes made in the napari panel"

    def set_enabled(self, kind: str, on: bool) -> None:
        if self.enabled[kind] != on:
            self.enabled[kind] = on
            self._edited()

    def set_magnitude(self, kind: str, value: float) -> None:
        self._replace(kind, with_magnitude(self.specs[kind], value))

    def set_probability(self, kind: str, p: float) -> None:
        self._replace(kind, with_probability(self.specs[kind], p))

    def set_option(self, kind: str, on: bool) -> None:
        self._replace(kind, with_option(self.specs[kind], on))

    def _replace(self, kind: str, new) -> None:
        """Take ``new`` as the ``kind`` transform; a real change marks the draft as edited."""
        if new != self.specs[kind]:
            self.specs[kind] = new
            self._edited()

    def composition(self) -> Composition:
        transforms = tuple(self.specs[kind] for kind in self.order if self.enabled[kind])
        return Composition(name=self.name, description=self.description, transforms=transforms)


def preset_names() -> tuple[str, ...]:
    """Built-in presets, the paper's two first (``morphology``, ``context``), then ``none``."""
    ordered = [name for name in ("morphology", "context") if name in PRESETS]
    return (
        *ordered,
        *[name for name in PRESETS if name not in ordered and name != IDENTITY_NAME],
        IDENTITY_NAME,
    )


def weight_text(weight_a: float, name_a: str, name_b: str) -> str:
    """How the loss is split, in words: 'loss = 0.70 × A (morphology) + 0.30 × B (context)'."""
    if weight_a >= 1.0:
        return f"loss = A ({name_a}) only; B is not used"
    if weight_a <= 0.0:
        return f"loss = B ({name_b}) only; A is not used"
    return f"loss = {weight_a:.2f} × A ({name_a}) + {1 - weight_a:.2f} × B ({name_b})"
