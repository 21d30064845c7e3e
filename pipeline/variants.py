"""The one variant grammar of every experiment section of params.yaml, and the project's one merge function.

    <experiment>:                   a section; `profiles:` overrides are merged in first (pipeline/config.py)
      <settings ...>                every other key: the experiment's defaults (fields of its Settings model)
      variants: {name: overrides}   explicit variants; a name the grid also makes overrides that grid variant
      grid:                         optional: a named product that expands into variants
        name: "{method}-{dataset}"  the variant name, from the axes' value names
        axes: {axis: {value: overrides}}   merged in axis order; the axis also sets the settings key of its own
                                    name (if the Settings model has one) to the value's name
        exclude: [{axis: value}]    combinations left out
      reference: {name: settings}   complete configurations runnable by name, not in the grid, inheriting nothing

A variant's settings = defaults <- its axes' overrides <- its own overrides, validated by the experiment's Settings
model; the section's own settings are checked first, each by itself (so a bad default fails even where every
variant overrides it), and every variant is resolved when params.yaml is loaded: a bad value fails before any job
starts, with one line naming the key where the file sets it (a default, an axis value, a variant's override). `merge` deep-merges mappings; lists and scalars replace. A mapping
whose `kind` changes (a discriminated union: a schedule, say) keeps from the defaults only the keys the new kind
has, so `schedule: {kind: constant, block: 16}` over a doubling schedule drops the doubling's own keys.
"""
from __future__ import annotations

import copy
import functools
import itertools
import re
import string
import types
import typing
from dataclasses import dataclass, field

from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import ConfigError

GRAMMAR_KEYS = ("variants", "grid", "reference")  # the section keys that are not settings
# a variant's name is a path component and a word of the stages' shell commands: nothing a shell would interpret
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def _check_name(name: str, where: str) -> None:
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{where}: {name!r} is not a valid variant name (letters, digits and _ . + -, "
                          f"starting with a letter or digit)")


# ---- merging ------------------------------------------------------------------------------------------------------
def _members(annotation) -> list:
    """The pydantic models an annotation may hold (unwrapping Annotated, Optional and unions)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _members(a)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def _kind_of(model: type[BaseModel]) -> str | None:
    f = model.model_fields.get("kind")
    args = typing.get_args(f.annotation) if f is not None else ()
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


def _schema_for(schema: type[BaseModel] | None, key: str, kind: str | None) -> type[BaseModel] | None:
    """The model of `key` in `schema` (the member of kind `kind` for a discriminated union), or None."""
    if schema is None or key not in schema.model_fields:
        return None
    members = _members(schema.model_fields[key].annotation)
    if kind is not None:
        members = [m for m in members if _kind_of(m) == kind] or members
    return members[0] if len(members) == 1 else None


def merge(base: dict, override: dict, schema: type[BaseModel] | None = None) -> dict:
    """`override` deep-merged over `base` (both left untouched). With `schema` (the pydantic model of `base`), a
    nested mapping whose `kind` the override changes keeps only the keys the new kind's model has."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            kind = value.get("kind", old.get("kind"))
            sub = _schema_for(schema, key, kind)
            if "kind" in value and value["kind"] != old.get("kind"):
                old = {k: v for k, v in old.items() if sub is not None and k in sub.model_fields}
            out[key] = merge(old, value, sub)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ---- the grammar ----------------------------------------------------------------------------------------------------
@dataclass
class Section:
    """One experiment's section, resolved: every variant's (and reference's) validated settings."""

    name: str
    variants: dict[str, BaseModel]  # in grid order, then the explicit variants in file order
    coords: dict[str, dict[str, str]]  # variant -> {axis: value} (empty for explicit variants)
    references: dict[str, BaseModel] = field(default_factory=dict)
    raw: dict = field(default_factory=dict)  # the section as merged for the active profile (fingerprints, DVC)

    def settings(self, variant: str) -> BaseModel:
        """A variant's or reference's settings; one-line ConfigError naming the known ones otherwise."""
        if variant in self.variants:
            return self.variants[variant]
        if variant in self.references:
            return self.references[variant]
        known = ", ".join([*self.variants, *self.references])
        raise ConfigError(f"{self.name}: unknown variant {variant!r}; known: {known}")


def _message(first: dict) -> str:
    if first["type"] == "extra_forbidden":
        return "unknown key"
    return "required key is missing" if first["type"] == "missing" else first["msg"].removeprefix("Value error, ")


def _key_path(raw: dict, loc: tuple) -> tuple:
    """pydantic's error location as a path of params.yaml keys (a tagged union adds its tag, which is no key)."""
    path, node = [], raw
    for part in loc:
        if isinstance(node, dict) and part not in node and part in node.values():
            continue  # the tag of a discriminated union (e.g. schedule.constant.block): no key
        path.append(part)
        node = node.get(part) if isinstance(node, dict) else node[part] if isinstance(node, list) and \
            isinstance(part, int) and part < len(node) else None
    return tuple(path)


def _holds(layer: dict, loc: tuple) -> bool:
    """Does the override `layer` set the key at path `loc` (or a parent of it)?"""
    node = layer
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return False
        if not isinstance(node, (dict, list)):
            return True
    return True


def _validate(model: type[BaseModel], raw: dict, where: str, layers: list[tuple[str, dict]] = ()) -> BaseModel:
    """Validate; the error names the layer that set the bad key (`layers`: (where, overrides), most specific
    first), or `where` when none did (a missing key, or one of the section's defaults: `layers` ends with them)."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        errors = err.errors()  # a misspelt key is also a missing one: name the unknown key first
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc = _key_path(raw, tuple(first["loc"]))
        key = ".".join(str(p) for p in loc)
        # a missing key is named in the layer that gave its parent mapping (the section's own settings, often)
        held = loc[:-1] if first["type"] == "missing" else loc
        culprit = next((w for w, layer in layers if held and _holds(layer, held)), None)
        if culprit is None:
            raise ConfigError(f"{where}: {key + ': ' if key else ''}{_message(first)}") from None
        raise ConfigError(f"{culprit}.{key}: {_message(first)}") from None


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping, got {type(value).__name__}")
    return value


def expand_grid(grid: dict, where: str) -> list[tuple[str, dict[str, str], list[dict]]]:
    """grid -> [(variant name, {axis: value}, [overrides in axis order])] in product order, exclusions left out."""
    unknown = sorted(set(grid) - {"name", "axes", "exclude"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (a grid has name, axes, exclude)")
    axes = _mapping(grid.get("axes"), f"{where}.axes")
    pattern = grid.get("name")
    if not axes or not isinstance(pattern, str):
        raise ConfigError(f"{where}: needs `name` (e.g. \"{{method}}-{{dataset}}\") and `axes`")
    fields = {f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None}
    if fields != set(axes):
        raise ConfigError(f"{where}.name: {pattern!r} must name every axis once ({', '.join(axes)})")
    values = {a: _mapping(v, f"{where}.axes.{a}") for a, v in axes.items()}
    for a, vs in values.items():
        if not vs:
            raise ConfigError(f"{where}.axes.{a}: an axis needs at least one value")
    exclude = grid.get("exclude") or []
    for i, rule in enumerate(exclude):
        if not isinstance(rule, dict) or any(a not in values or v not in values[a] for a, v in rule.items()):
            raise ConfigError(f"{where}.exclude[{i}]: {rule!r} names an axis or value the grid does not have")
    out, seen = [], set()
    for combo in itertools.product(*(list(vs) for vs in values.values())):
        coords = dict(zip(values, combo))
        if any(all(coords[a] == v for a, v in rule.items()) for rule in exclude):
            continue
        name = pattern.format(**coords)
        _check_name(name, f"{where}.name")
        if name in seen:
            raise ConfigError(f"{where}.name: {pattern!r} gives the name {name!r} twice")
        seen.add(name)
        out.append((name, coords, [_mapping(values[a][v], f"{where}.axes.{a}.{v}") for a, v in coords.items()]))
    return out


@functools.cache
def _adapter(model: type[BaseModel], key: str) -> TypeAdapter:
    field = model.model_fields[key]
    return TypeAdapter(typing.Annotated[field.annotation, field])  # the field's constraints and discriminator too


def check_defaults(name: str, defaults: dict, settings_model: type[BaseModel]) -> None:
    """The section's own settings, each checked by itself before any variant: an unknown key, or a bad value even
    where every variant overrides it, is named at its place in the section (a missing key is a variant's matter)."""
    for key, value in defaults.items():
        if key not in settings_model.model_fields:
            raise ConfigError(f"{name}.{key}: unknown key")
        try:
            _adapter(settings_model, key).validate_python(value)
        except ValidationError as err:
            errors = [e for e in err.errors() if e["type"] != "missing"]
            if errors:
                first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
                loc = _key_path({key: value}, (key, *first["loc"]))
                raise ConfigError(f"{name}.{'.'.join(str(p) for p in loc)}: {_message(first)}") from None


def resolve_section(name: str, raw: dict, settings_model: type[BaseModel]) -> Section:
    """A section of params.yaml (profile already merged) -> every variant's validated settings."""
    raw = _mapping(raw, name)
    defaults = {k: v for k, v in raw.items() if k not in GRAMMAR_KEYS}
    check_defaults(name, defaults, settings_model)
    explicit = _mapping(raw.get("variants"), f"{name}.variants")
    grid = expand_grid(_mapping(raw.get("grid"), f"{name}.grid"), f"{name}.grid") if raw.get("grid") else []
    variants, coords = {}, {}
    for variant, axes, overrides in grid:
        merged, own = defaults, _mapping(explicit.get(variant), f"{name}.variants.{variant}")
        layers = [(f"{name}.variants.{variant}", own)] + [
            (f"{name}.grid.axes.{a}.{v}", o) for (a, v), o in reversed(list(zip(axes.items(), overrides)))]
        for (axis, value), override in zip(axes.items(), overrides):
            merged = merge(merged, override, settings_model)
            if axis in settings_model.model_fields:
                if axis in override:
                    raise ConfigError(f"{name}.grid.axes.{axis}.{value}: sets {axis!r}, which the axis sets itself")
                merged = {**merged, axis: value}
        merged = merge(merged, own, settings_model)
        where = f"{name}.variants.{variant}" if variant in explicit else f"{name}.grid (variant {variant})"
        layers.append((name, defaults))
        variants[variant], coords[variant] = _validate(settings_model, merged, where, layers), axes
    for variant, overrides in explicit.items():
        if variant in variants:
            continue
        _check_name(variant, f"{name}.variants")
        own = _mapping(overrides, f"{name}.variants.{variant}")
        merged = merge(defaults, own, settings_model)
        where = f"{name}.variants.{variant}"
        variants[variant] = _validate(settings_model, merged, where, [(where, own), (name, defaults)])
        coords[variant] = {}
    if not variants:
        raise ConfigError(f"{name}: no variants (give `variants:` or a `grid:`)")
    references = {}
    for ref, body in _mapping(raw.get("reference"), f"{name}.reference").items():
        _check_name(ref, f"{name}.reference")
        if ref in variants:
            raise ConfigError(f"{name}.reference.{ref}: also a variant name")
        where = f"{name}.reference.{ref}"
        references[ref] = _validate(settings_model, _mapping(body, where), where)
    return Section(name, variants, coords, references, raw)

