"""Reading back a dataclass stored as JSON by any version of the worker (pure).

Old and new workers share Redis during a rolling upgrade, and a newer one's outbox entries, scope
state and grouping state may carry fields this version does not know. `Cls(**data)` refuses such a
field, so every round of this worker would fail on them; the project's rule is instead that fields
are added and older workers drop them. A field this version requires and the data lacks still
fails, naming the type and the field: that is a broken record, not a newer one.
"""

from __future__ import annotations

import logging
from dataclasses import MISSING, fields
from typing import Any, Mapping, TypeVar, cast

log = logging.getLogger(__name__)

T = TypeVar("T")

# (type, field) pairs already logged: a newer worker's field would otherwise log on every read.
_told: set[tuple[str, str]] = set()


def known_fields(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` less the keys that are not init fields of the dataclass `cls`."""
    names = {f.name for f in fields(cls) if f.init}
    for name in sorted(set(data) - names):
        if (cls.__name__, name) not in _told:
            _told.add((cls.__name__, name))
            log.debug("stored field unknown to this version dropped", extra={"type": cls.__name__, "field": name})
    return {k: v for k, v in data.items() if k in names}


def from_stored(cls: type[T], data: Mapping[str, Any], **given: Any) -> T:
    """A `cls` (a dataclass) from its stored `data`, fields this version does not know dropped;
    `given` replaces fields the caller has already turned into objects (nested dataclasses).
    TypeError, naming them, when a required field is absent."""
    kept = {**known_fields(cls, data), **given}
    missing = [f.name for f in fields(cast(Any, cls)) if f.init and f.default is MISSING and f.default_factory is MISSING and f.name not in kept]
    if missing:
        raise TypeError(f"a stored {cls.__name__} lacks its required field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return cls(**kept)
