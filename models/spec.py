"""Base of the gin-configured spec dataclasses: every field is checked against its type hint.

gin passes bindings through untyped, so without this `VitSpec.model_dims='wide'` would fail
deep inside a layer with a message about string formatting.
"""

import dataclasses
import types
import typing
from typing import Any


class Spec:
    """Subclasses that define __post_init__ call super().__post_init__() first."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value, expected = getattr(self, field.name), hints[field.name]
            if not _matches(value, expected):
                raise ValueError(
                    f"{type(self).__name__}.{field.name}={value!r} has the wrong type; "
                    f"give {_describe(expected)}"
                )


def _matches(value: Any, expected: Any) -> bool:
    if expected is Any:
        return True
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if expected is float:  # an int is a fine float (gin reads `1` as an int)
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    origin = typing.get_origin(expected)
    return isinstance(value, origin or expected)


def _describe(expected: Any) -> str:
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(expected))
    if expected is type(None):
        return "None"
    return f"a value of type {getattr(expected, '__name__', expected)}"
