"""Old names keep working for one release, with a ``DeprecationWarning`` that names the new one.

Every rename is listed in CHANGELOG.md under "Changed" as old name -> new name.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any


def renamed_arguments(**old_to_new: str) -> Callable[[Callable], Callable]:
    """Decorate a function so keyword arguments under their old names still work (with a warning).

    Example:
      >>> @renamed_arguments(threshold="tol")
      ... def solve(*, tol=1e-3):
      ...     return tol
      >>> import warnings
      >>> with warnings.catch_warnings(record=True):
      ...     warnings.simplefilter("always")
      ...     solve(threshold=1e-6)
      1e-06
    """

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__name__}() got both {old!r} and its new name {new!r}")
                    warnings.warn(f"{fn.__name__}(): argument {old!r} was renamed {new!r}", DeprecationWarning,
                                  stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def renamed_function(fn: Callable, old_name: str) -> Callable:
    """An alias of ``fn`` under its old name that warns on each call."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(f"{old_name}() was renamed {fn.__name__}()", DeprecationWarning, stacklevel=2)
        return fn(*args, **kwargs)

    wrapper.__name__ = wrapper.__qualname__ = old_name
    wrapper.__doc__ = f"Deprecated alias of :func:`{fn.__name__}`."
    return wrapper


__all__ = ["renamed_arguments", "renamed_function"]
