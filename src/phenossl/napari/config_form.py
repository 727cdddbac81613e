"""Parameter forms declared by the config models: a row names a field of a pydantic section, and the widget
kind, range, tooltip and default come from that field, so a new option is one field plus one ``Row``.

The mapping (``widget_options``) is pure and needs no Qt; ``ConfigForm`` builds the magicgui widgets and puts
them in a ``QFormLayout`` (the widgets' own ``QGroupBox`` layouts stay as they were)."""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel

_UNSET: Any = object()


@dataclass(frozen=True)
class Row:
    """One row of a form: a field, its label, and only what the GUI says differently from the config.

    ``value``: the GUI's own starting value (e.g. fewer epochs for a first try on a CPU); ``low``/``high``:
    a range for a field the config leaves open; ``choices``: ``(label, value)`` pairs in the order shown;
    ``tooltip``: words for the user where the field's description (the default tooltip) is written for a
    configuration file; ``suffix``: a unit; ``none_text``: what the lowest
    value of an optional number reads (that value means None)."""

    name: str
    label: str
    value: Any = _UNSET
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[tuple[str, Any], ...] | None = None
    tooltip: str | None = None
    suffix: str = ""
    none_text: str = ""


def base_type(annotation: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``T | None``, ``(T, False)`` otherwise."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(get_args(annotation))
    return annotation, False


def field_bounds(model: type[BaseModel], name: str) -> tuple[float | None, float | None]:
    """The field's ``ge``/``gt``/``le``/``lt`` as an inclusive range (an int's ``gt=0`` starts at 1)."""
    info = model.model_fields[name]
    kind, _ = base_type(info.annotation)
    step = 1 if kind is int else 0
    low = high = None
    for item in info.metadata:
        if isinstance(item, at.Ge):
            low = item.ge
        elif isinstance(item, at.Gt):
            low = item.gt + step
        elif isinstance(item, at.Le):
            high = item.le
        elif isinstance(item, at.Lt):
            high = item.lt - step
    return low, high


def widget_options(model: type[BaseModel], row: Row) -> dict[str, Any]:
    """The ``magicgui.widgets.create_widget`` arguments for one row, plus ``qt``: what magicgui has no option
    for (a unit, a text for None), set on the Qt widget afterwards. Pure: no widget is made."""
    info = model.model_fields[row.name]
    kind, nullable = base_type(info.annotation)
    value = info.get_default(call_default_factory=True) if row.value is _UNSET else row.value
    options: dict[str, Any] = {"tooltip": row.tooltip or info.description or ""}
    qt: dict[str, Any] = {}
    if get_origin(kind) is Literal or row.choices is not None:
        widget_type = "ComboBox"
        options["choices"] = list(row.choices or [(str(choice), choice) for choice in get_args(kind)])
    elif kind is bool:
        widget_type = "CheckBox"
    elif kind in (int, float):
        low, high = field_bounds(model, row.name)
        low = row.low if row.low is not None else low
        high = row.high if row.high is not None else high
        options.update(min=low if low is not None else 0, max=high if high is not None else 10**9)
        if row.step is not None or kind is int:
            options["step"] = row.step or 1
        # whole numbers too in a float box with 0 decimals: magicgui's int box (superqt's QLargeIntSpinBox)
        # shows no unit or special text, and takes the keyboard focus whenever code sets its value
        widget_type = "FloatSpinBox"
        qt = {"suffix": row.suffix, "none_text": row.none_text, "decimals": 0 if kind is int else None}
        if value is None:
            value = options["min"]  # an optional number at its lowest value reads as None
    elif kind is Path:
        widget_type = "FileEdit"
        options.update(mode="r", nullable=nullable)
    elif kind is str:
        widget_type = "LineEdit"
        value = "" if value is None else value
    else:
        raise TypeError(f"{model.__name__}.{row.name}: no form widget for {info.annotation!r}")
    options["widget_type"] = widget_type
    return {"value": value, "name": row.name, "label": row.label, "options": options, "qt": qt}


def read_value(model: type[BaseModel], row: Row, value: Any) -> Any:
    """A widget's value as the field takes it: whole numbers as int, the lowest value of an optional
    number as None, an empty text as the field's default."""
    info = model.model_fields[row.name]
    kind, nullable = base_type(info.annotation)
    if kind in (int, float) and row.choices is None:
        if nullable and value <= widget_options(model, row)["options"]["min"]:
            return None
        return round(value) if kind is int else float(value)
    if kind is str and isinstance(value, str):
        return value.strip() or info.get_default(call_default_factory=True)
    return value


class ConfigForm:
    """The magicgui widgets of some fields of one config section; ``values()`` is ready for validation."""

    def __init__(self, model: type[BaseModel], rows: list[Row]):
        from magicgui.widgets import create_widget

        self.model = model
        self.rows = {row.name: row for row in rows}
        self.widgets = {}
        self.labels: dict[str, Any] = {}
        for row in rows:
            spec = widget_options(model, row)
            qt = spec.pop("qt")
            widget = create_widget(**spec)
            _set_qt_options(widget.native, **qt)
            self.widgets[row.name] = widget

    def __getitem__(self, name: str):
        return self.widgets[name]

    def native(self, name: str):
        """The Qt widget of a field (the widgets' public attributes keep Qt's API)."""
        widget = self.widgets[name]
        return widget.line_edit.native if hasattr(widget, "line_edit") else widget.native

    def add_rows(self, layout) -> None:
        """Append a labelled row per field to a ``QFormLayout``."""
        from qtpy.QtWidgets import QLabel

        for name, row in self.rows.items():
            self.labels[name] = QLabel(row.label)
            layout.addRow(self.labels[name], self.widgets[name].native)

    def inline(self) -> list:
        """Label, widget, label, widget...: the fields side by side in one row."""
        from qtpy.QtWidgets import QLabel

        self.labels = {name: QLabel(row.label) for name, row in self.rows.items()}
        return [part for name in self.rows for part in (self.labels[name], self.widgets[name].native)]

    def set_visible(self, name: str, visible: bool) -> None:
        self.widgets[name].native.setVisible(visible)
        if name in self.labels:
            self.labels[name].setVisible(visible)

    def values(self) -> dict[str, Any]:
        """The fields' values, ready for ``Model(**values)`` or ``model_copy(update=values)``."""
        widgets = self.widgets
        return {name: read_value(self.model, row, widgets[name].value) for name, row in self.rows.items()}


def _set_qt_options(native: Any, suffix: str = "", none_text: str = "", decimals: int | None = None) -> None:
    if suffix:
        native.setSuffix(suffix)
    if none_text:
        native.setSpecialValueText(none_text)
    if decimals is not None and hasattr(native, "setDecimals"):
        native.setDecimals(decimals)


def choice_box(choices: Any, tooltip: str = "", label: str = ""):
    """A magicgui combo box of ``(label, value)`` pairs, or of a callable giving them (``reset_choices``
    asks again): for picks that are not config fields (devices, runs, table columns)."""
    from magicgui.widgets import ComboBox

    return ComboBox(choices=choices, tooltip=tooltip or None, label=label)
