"""Registries: by name (models, data sets, priors are found by name, not by if/elif chains) and by type."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from vaelab.core.errors import VaelabError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    description: str
    meta: dict = field(default_factory=dict)  # what a registry's users may ask of an entry (e.g. a data set's kind)


class Registry(Generic[T]):
    """A named collection; unknown names raise a VaelabError that lists the accepted choices."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str, **meta: object) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, description, dict(meta))
            return obj

        return add

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        if name not in self._entries:
            raise VaelabError(f"unknown {self.kind} {name!r}; choose from: {', '.join(self.names())}")
        return self._entries[name]

    def name_of(self, obj: object) -> str:
        """The name ``obj`` is registered under (ValueError if it is not registered)."""
        for entry in self._entries.values():
            if entry.obj is obj:
                return entry.name
        raise ValueError(f"{obj!r} is not a registered {self.kind}")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())


class TypeRegistry(Generic[T]):
    """Values registered per class and found for an object by its class's method resolution order, the way
    ``torch.distributions.register_kl`` dispatches: a subclass inherits what its base registered unless it
    registers its own. How evaluation and figures attach to a model type from outside the model's file."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[type, T] = {}

    def register(self, cls: type) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if cls in self._entries:
                raise ValueError(f"{self.kind} for {cls.__name__} is registered twice")
            self._entries[cls] = obj
            return obj

        return add

    def lookup(self, obj: object) -> T | None:
        """What was registered for the nearest class of ``obj`` (an instance or a class), or None."""
        cls = obj if isinstance(obj, type) else type(obj)
        for base in cls.__mro__:
            if base in self._entries:
                return self._entries[base]
        return None

    def all(self, obj: object) -> list[T]:
        """Everything registered along the class's MRO, the most general class first (to combine, not override)."""
        cls = obj if isinstance(obj, type) else type(obj)
        return [self._entries[base] for base in reversed(cls.__mro__) if base in self._entries]
