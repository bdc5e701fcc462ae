"""Reading JSON-shaped API objects into frozen dataclasses, driven by the dataclasses' own types.

A field's type says how its value is read: ``str``, ``int``, ``float`` and ``bool`` are coerced
as ``str()`` etc. do; ``Literal[...]`` is an enum; ``tuple[X, ...]`` a list; ``Mapping[...]`` an
object copied as it is; a dataclass a nested object; ``X | None`` an optional value. The field's
default is the value of an absent (or null) key, and a field without one is required. Markers in
``Annotated[X, ...]`` say the rest: :class:`Json` (a JSON name that is not the camelCase of the
attribute), :class:`Required` (the message when it is missing), and the value rules
:class:`Bounds`, :class:`Check` and :class:`UniqueKey`.

Readers raise :class:`Invalid` with the JSON path below the object read; the plan of each class
(its fields, JSON names and readers) is built once and cached.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union

T = TypeVar("T")

Reader = Callable[[Any], Any]
"""Reads one present JSON value into its Python value; raises :class:`Invalid` if it cannot."""


class Invalid(Exception):
    """A value a reader refused: ``message`` says what is wrong and the fix; ``path`` is its JSON
    path below the object being read (``.a.b[2]``), built up as the error rises."""

    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.message = message
        self.path = path

    def under(self, step: str) -> Invalid:
        """The same problem seen from the enclosing value; ``step`` is ``.key`` or ``[index]``."""
        return Invalid(self.message, step + self.path)


# -- markers ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Json:
    """The field's JSON name where it is not the attribute in camelCase: a dotted ``path`` for a
    value inside container objects that have no dataclass of their own (``dynamic.enabled``)."""

    path: str


@dataclass(frozen=True)
class Required:
    """The ``message`` (what is wrong and the fix) when a field without a default is missing:
    absent, null, ``""`` or ``{}``. Without this marker the message is "is required"."""

    message: str


class ValueRule:
    """A marker that checks a value once read; ``check`` raises :class:`Invalid`."""

    def check(self, value: Any) -> None:
        """Raise :class:`Invalid` if ``value`` breaks the rule."""
        raise NotImplementedError


@dataclass(frozen=True)
class Bounds(ValueRule):
    """Inclusive numeric bounds (the CRD's ``minimum`` and ``maximum``); ``message``, where
    given, replaces the generic complaint."""

    minimum: int | float | None = None
    maximum: int | float | None = None
    message: str | None = None

    def check(self, value: Any) -> None:
        if self.minimum is not None and value < self.minimum:
            raise Invalid(self.message or f"must be at least {self.minimum}, not {value}")
        if self.maximum is not None and value > self.maximum:
            raise Invalid(self.message or f"must be at most {self.maximum}, not {value}")


@dataclass(frozen=True)
class Check(ValueRule):
    """A rule the CRD states as a pattern or CEL: ``problem(value)`` is None for a good value,
    else what is wrong and the fix."""

    problem: Callable[[Any], str | None]

    def check(self, value: Any) -> None:
        problem = self.problem(value)
        if problem:
            raise Invalid(problem)


@dataclass(frozen=True)
class UniqueKey(ValueRule):
    """On a tuple of dataclasses: no two items share attribute ``attr`` (the CRD's
    ``x-kubernetes-list-map-keys``); ``message`` is formatted with the repeated value."""

    attr: str
    message: str

    def check(self, value: Any) -> None:
        seen: set[Any] = set()
        for i, item in enumerate(value):
            key = getattr(item, self.attr)
            if key in seen:
                raise Invalid(self.message.format(key), f"[{i}].{json_name(type(item), self.attr)}")
            seen.add(key)


# -- plans -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class FieldPlan:
    """How one dataclass field is read: its attribute, its JSON path under the parent object
    (``keys``), its full type (``hint``, markers included), the reader of a present value, the
    values that count as missing besides null (``blank``), the dataclass field itself (for the
    default), and the message when a required field is missing."""

    attr: str
    keys: tuple[str, ...]
    hint: Any
    read: Reader
    blank: tuple[Any, ...]
    field: dataclasses.Field[Any]
    if_missing: str

    @property
    def json(self) -> str:
        """The dotted JSON name under the parent object."""
        return ".".join(self.keys)

    @property
    def required(self) -> bool:
        """Whether the field has no default."""
        return _required(self.field)

    def missing(self) -> Any:
        """The value of a missing field: its default, else :class:`Invalid` naming the fix."""
        if self.field.default is not dataclasses.MISSING:
            return self.field.default
        if self.field.default_factory is not dataclasses.MISSING:
            return self.field.default_factory()
        raise Invalid(self.if_missing, "." + self.json)


def _taker(plan: FieldPlan) -> Callable[[Mapping[str, Any]], Any]:
    """The function that takes this field's value from its parent object: read, or its default
    when missing (the per-parse hot path, so what it needs is bound to locals)."""
    key, rest, read, blank, step = plan.keys[0], plan.keys[1:], plan.read, plan.blank, "." + plan.json
    default, missing = plan.field.default, plan.missing

    def take(data: Mapping[str, Any]) -> Any:
        raw = data.get(key)
        if rest:
            raw = _inside(raw, rest, key)
        if raw is None or raw in blank:
            return default if default is not dataclasses.MISSING else missing()
        try:
            return read(raw)
        except Invalid as e:
            raise e.under(step) from None
    return take


def _inside(container: Any, keys: tuple[str, ...], where: str) -> Any:
    """The value at ``keys`` inside a container object of a dotted JSON path; None if absent."""
    for key in keys:
        if not container:
            return None
        if not _is_mapping(container):
            raise Invalid(f"must be an object, not {_kind(container)}", "." + where)
        container = container.get(key)
        where += "." + key
    return container


def _is_mapping(value: Any) -> bool:
    """``isinstance(value, Mapping)``, quick for the usual ``dict``."""
    return type(value) is dict or isinstance(value, Mapping)


def camel(attr: str) -> str:
    """``max_batch_size`` -> ``maxBatchSize``."""
    first, *rest = attr.split("_")
    return first + "".join(word.capitalize() for word in rest)


@functools.cache
def plan_of(cls: type) -> tuple[FieldPlan, ...]:
    """The reading plan of a dataclass, one entry per field in declaration order."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return tuple(_plan_field(f, hints[f.name]) for f in dataclasses.fields(cls))


def _plan_field(f: dataclasses.Field[Any], hint: Any) -> FieldPlan:
    markers = _markers(hint)
    json = next((m.path for m in markers if isinstance(m, Json)), camel(f.name))
    if_missing = next((m.message for m in markers if isinstance(m, Required)), "is required")
    blank: tuple[Any, ...] = ("", {}) if _required(f) else ({},) if is_object(hint) else ()
    return FieldPlan(f.name, tuple(json.split(".")), hint, reader_of(hint), blank, f, if_missing)


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def json_name(cls: type, attr: str) -> str:
    """The dotted JSON name of one field of a dataclass."""
    return next(p.json for p in plan_of(cls) if p.attr == attr)


def _markers(hint: Any) -> tuple[Any, ...]:
    """The ``Annotated`` metadata on a field's type, looking through ``| None``."""
    hint = strip_optional(hint)
    return tuple(hint.__metadata__) if typing.get_origin(hint) is Annotated else ()


def strip_optional(hint: Any) -> Any:
    """``X`` for ``X | None``; any other type as it is."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return inner
    return hint


def strip(hint: Any) -> Any:
    """The bare type under ``| None`` and ``Annotated``, in either order."""
    hint = strip_optional(hint)
    return strip_optional(typing.get_args(hint)[0]) if typing.get_origin(hint) is Annotated else hint


def is_object(hint: Any) -> bool:
    """Whether values of this type are JSON objects (an empty one then counts as missing)."""
    return dataclasses.is_dataclass(strip(hint))


# -- readers ---------------------------------------------------------------------------------

def read(cls: type[T], data: Any) -> T:
    """``data`` (a JSON object) read into the dataclass ``cls``; raises :class:`Invalid`."""
    hint: Any = cls  # a class is hashable, whatever mypy makes of type[T]
    result: T = reader_of(hint)(data)
    return result


@functools.cache
def reader_of(hint: Any) -> Reader:
    """The reader of values of one type (see the module's docstring)."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *markers = typing.get_args(hint)
        return _checked(reader_of(base), tuple(m for m in markers if isinstance(m, ValueRule)))
    if origin in (Union, types.UnionType):
        return reader_of(strip_optional(hint))  # null is the field's business
    if dataclasses.is_dataclass(hint):
        return _object_reader(typing.cast(type, hint))
    if origin is Literal:
        return _choice_reader(typing.get_args(hint))
    if origin is tuple:
        return _tuple_reader(reader_of(typing.get_args(hint)[0]))
    if origin is Mapping:
        return _mapping
    if hint in _SCALARS:
        return _SCALARS[hint]
    raise TypeError(f"no reader for type {hint!r}")


def _checked(read: Reader, rules: tuple[ValueRule, ...]) -> Reader:
    if not rules:
        return read

    checks = tuple(rule.check for rule in rules)

    def read_checked(value: Any) -> Any:
        result = read(value)
        for check in checks:
            check(result)
        return result
    return read_checked


def _object_reader(cls: type) -> Reader:
    takers = tuple(_taker(p) for p in plan_of(cls))

    def read_object(value: Any) -> Any:
        if not _is_mapping(value):
            raise Invalid(f"must be an object, not {_kind(value)}")
        return cls(*[take(value) for take in takers])
    return read_object


def _choice_reader(choices: tuple[Any, ...]) -> Reader:
    def read_choice(value: Any) -> Any:
        if value in choices:
            return value
        raise Invalid(f"{value!r} is not supported; use one of {', '.join(map(str, choices))}")
    return read_choice


def _tuple_reader(item: Reader) -> Reader:
    def read_tuple(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, (list, tuple)):
            raise Invalid(f"must be a list, not {_kind(value)}")
        items = []
        for i, v in enumerate(value):
            try:
                items.append(item(v))
            except Invalid as e:
                raise e.under(f"[{i}]") from None
        return tuple(items)
    return read_tuple


def _mapping(value: Any) -> dict[Any, Any]:
    if not _is_mapping(value):
        raise Invalid(f"must be an object, not {_kind(value)}")
    return dict(value)


def _scalar(kind: type, noun: str) -> Reader:
    def read_scalar(value: Any) -> Any:
        if type(value) is kind:
            return value
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise Invalid(f"{value!r} is not {noun}") from None
    return read_scalar


_SCALARS: dict[Any, Reader] = {
    str: _scalar(str, "a string"), int: _scalar(int, "an integer"),
    float: _scalar(float, "a number"), bool: _scalar(bool, "a boolean"),
}
_KINDS: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}


def _kind(value: Any) -> str:
    """A JSON-ish name for the type of a wrong value, for messages."""
    return _KINDS.get(type(value), type(value).__name__)
