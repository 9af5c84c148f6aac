"""pybind11-style enums built from the extracted surface (``tests/doubles/tensorrt_api/surface_*.json``).

A member behaves like the bindings' ``py::enum_`` values: ``int(member)``, ``member.name``, ``member.value``,
``str(member) == "BuilderFlag.TF32"``, ``EnumType.__members__``, hashing and equality by type and value,
construction from an int (``DataType(1)``). Enums declared ``py::arithmetic`` in the bindings also compare
with ints; the double treats every enum that way (more lenient than the real bindings only there).
"""

from __future__ import annotations

from typing import Any, ClassVar


class PybindEnum:
    """Base of every enum type of the double; members are instances created by :func:`make_enum`."""

    __slots__ = ("_name", "_value")
    __members__: ClassVar[dict[str, PybindEnum]] = {}

    def __new__(cls, value: int) -> PybindEnum:
        for member in cls.__members__.values():
            if member._value == int(value):
                return member
        raise ValueError(f"{value} is not a valid {cls.__name__}")

    @property
    def name(self) -> str:
        return self._name

    @property
    def value(self) -> int:
        return self._value

    def __int__(self) -> int:
        return self._value

    def __index__(self) -> int:
        return self._value

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._value))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PybindEnum):
            return type(other) is type(self) and other._value == self._value
        if isinstance(other, int):
            return other == self._value
        return NotImplemented

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self._name}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self._name}: {self._value}>"


def make_enum(name: str, members: dict[str, int]) -> type[PybindEnum]:
    """An enum type with ``members`` (name -> value) as class attributes and in ``__members__``."""
    cls: Any = type(name, (PybindEnum,), {"__slots__": ()})
    table = {}
    for member_name, value in members.items():
        member = object.__new__(cls)
        object.__setattr__(member, "_name", member_name)
        object.__setattr__(member, "_value", int(value))
        table[member_name] = member
        setattr(cls, member_name, member)
    cls.__members__ = table
    return cls
