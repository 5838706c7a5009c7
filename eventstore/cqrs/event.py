"""Domain events: what an aggregate says happened, as frozen dataclasses of JSON values.

    @dataclass(frozen=True)
    class NoteAdded(DomainEvent):
        note: str

The stored event type is `type_name` (the class name unless set), not the Python path of
the class: stored history must survive moving or renaming code (EventStoreDB's advice,
and SAFE.EventStore's CLR-type coupling is the counter-example). Rename a class and keep
its old `type_name`, and old streams still load.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Self


class DomainEvent:
    """Base of domain events. Subclasses are `@dataclass(frozen=True)` with JSON fields."""

    type_name: ClassVar[str] = "DomainEvent"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type_name" not in cls.__dict__:
            cls.type_name = cls.__name__

    def to_data(self) -> dict[str, Any]:
        """The event's fields as a JSON-ready dict (what the store keeps as its payload)."""
        if not dataclasses.is_dataclass(self):
            raise TypeError(f"{type(self).__name__} is not a dataclass")
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_data(cls, data: Any) -> Self:
        """The event back from its payload. Fields the payload lacks take their defaults,
        and keys the class no longer has are dropped, so adding a field with a default is
        a compatible change."""
        if not isinstance(data, dict):
            raise TypeError(f"{cls.type_name}: a payload is a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})
