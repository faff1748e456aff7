"""Read-only properties under a result field's old name that warn and return the new field (one release)."""

from __future__ import annotations

import warnings
from typing import Any


def renamed_field(old: str, new: str) -> property:
    """A property ``old`` of a result NamedTuple returning ``self.<new>`` with a ``DeprecationWarning``.

    Example:
      >>> from typing import NamedTuple
      >>> class Out(NamedTuple):
      ...     f: float
      ...     alpha = renamed_field("alpha", "f")
      >>> import warnings
      >>> with warnings.catch_warnings(record=True):
      ...     warnings.simplefilter("always")
      ...     Out(1.0).alpha
      1.0
    """

    def get(self: Any) -> Any:
        warnings.warn(f"{type(self).__name__}.{old} was renamed {new}", DeprecationWarning, stacklevel=2)
        value = getattr(self, new)
        return value() if callable(value) else value

    return property(get, doc=f"Deprecated: use ``{new}``.")
