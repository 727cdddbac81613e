"""What two runs were made differently, in words, from their saved configurations: the transforms added,
removed or changed in each composition the training used, then the other settings that shape an embedding
(method, encoder, loss weighting, epochs, resolution, view, clustering). Settings that cannot change what the
clusters follow (device, mixed precision, progress rate, output folder) are not named.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

#: settings that change how fast or where a run is made, not what it learns
IGNORED = {"name", "output", "input", "tiles", "segment", "train.device", "train.amp", "train.channels_last",
           "train.cache_on_device", "train.log_every", "embed.batch_size", "embed.device", "cluster.label_columns"}
COMPOSITIONS = ("composition_a", "composition_b")


def _ignored(key: str) -> bool:
    return any(key == name or key.startswith(name + ".") for name in IGNORED)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


def _by_kind(transforms: list[dict]) -> dict[str, dict]:
    """Transforms keyed by kind, a repeated kind numbered ('blur', 'blur #2') so each is compared with its
    counterpart in order."""
    seen: dict[str, int] = defaultdict(int)
    keyed = {}
    for transform in transforms:
        kind = transform["kind"]
        seen[kind] += 1
        keyed[kind if seen[kind] == 1 else f"{kind} #{seen[kind]}"] = transform
    return keyed


def composition_differences(a: dict, b: dict) -> list[str]:
    """'rotation added (p 1, degrees 180)', 'random_crop removed', 'center_crop fraction 0.7 -> 0.5': the
    transforms of composition ``b`` against ``a`` (both as ``Composition.model_dump(mode="json")``)."""
    ta, tb = _by_kind(a.get("transforms", [])), _by_kind(b.get("transforms", []))
    out = []
    for kind in [k for k in tb if k not in ta]:
        params = ", ".join(f"{key} {_value(v)}" for key, v in tb[kind].items() if key != "kind")
        out.append(f"{kind} added" + (f" ({params})" if params else ""))
    out += [f"{kind} removed" for kind in ta if kind not in tb]
    for kind in [k for k in ta if k in tb]:
        keys = [key for key in {**ta[kind], **tb[kind]} if key != "kind"]
        changed = [f"{key} {_value(ta[kind].get(key, '-'))} -> {_value(tb[kind].get(key, '-'))}" for key in keys
                   if ta[kind].get(key) != tb[kind].get(key)]
        if changed:
            out.append(f"{kind} " + ", ".join(changed))
    return out


def _used_compositions(train: dict) -> list[str]:
    """The compositions a training's loss used: A when weight_a > 0, B when weight_a < 1."""
    weight = train.get("weight_a", 1.0)
    return (["composition_a"] if weight > 0 else []) + (["composition_b"] if weight < 1 else [])


def config_differences(a: dict, b: dict) -> list[str]:
    """Each difference of run ``b``'s configuration from run ``a``'s (``RunConfig.model_dump(mode="json")``),
    one short line each; compositions first, transform by transform. Empty when they were made alike."""
    out = []
    train_a, train_b = a.get("train", {}), b.get("train", {})
    trained = [config.get("representation", "ssl") == "ssl" for config in (a, b)]
    if all(trained):
        for key in COMPOSITIONS:
            if key not in _used_compositions(train_a) and key not in _used_compositions(train_b):
                continue
            comp_a, comp_b = train_a.get(key, {}), train_b.get(key, {})
            letter = key[-1].upper()
            changes = composition_differences(comp_a, comp_b)
            renamed = comp_a.get("name") != comp_b.get("name")
            if changes or renamed:
                names = f" ({comp_a.get('name')} -> {comp_b.get('name')})" if renamed else ""
                out.append(f"composition {letter}{names}: " + ("; ".join(changes) or "same transforms"))
    from phenossl.config import setting_differences

    for key, value_a, value_b in sorted(setting_differences(a, b), key=lambda item: item[0]):
        if _ignored(key) or key.split(".")[-1] in COMPOSITIONS or any(f".{c}." in f".{key}." for c in COMPOSITIONS):
            continue
        if key.startswith("train.") and not all(trained):
            continue  # a measured or untrained run has no training to compare
        if key.startswith("train.method_params.") and key.split(".")[2] not in _method_sections(train_a, train_b):
            continue  # the parameters of a method neither run used
        out.append(f"{key} {_value(value_a)} -> {_value(value_b)}" + _weight_note(key, train_a, train_b))
    return out


def _weight_note(key: str, train_a: dict, train_b: dict) -> str:
    """Which composition a change of the loss weighting brought in or left out."""
    if key != "train.weight_a":
        return ""
    used_a, used_b = set(_used_compositions(train_a)), set(_used_compositions(train_b))
    name = train_b.get("composition_b", {}).get("name") or train_a.get("composition_b", {}).get("name")
    if used_b - used_a:
        return f" (composition B, {name}, now in the loss)"
    if used_a - used_b:
        return f" (composition B, {name}, no longer in the loss)"
    return ""


def _method_sections(train_a: dict, train_b: dict) -> set[str]:
    from phenossl.errors import ConfigError
    from phenossl.methods.registry import method_spec

    sections = set()
    for train in (train_a, train_b):
        try:
            sections.add(method_spec(train.get("method", "")).section)
        except ConfigError:  # a method no longer registered: its parameters are compared as they are
            sections.add(str(train.get("method", "")))
    return sections
