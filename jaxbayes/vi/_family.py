"""The variational-family interface: a small frozen object that builds a Gaussian distribution over a pytree.

A family (``MeanField()``, ``LowRank(rank=2)``, ``FullRank()``, or a user's own subclass) is configuration:
hashable, closed over by :func:`jaxbayes.vi.gaussian_vi`, never traced. Its :meth:`VariationalFamily.init`
builds the distribution ``q`` (a pytree implementing :class:`jaxbayes.typing.Family`: ``sample``,
``log_prob``, ``entropy``, ``kl``, ``covariance``) centred on a position. A new family is one subclass in one
file; no driver changes (see :func:`jaxbayes.vi.as_family` for the string shorthands).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

from jaxbayes.typing import ArrayLike, Family, PRNGKey, PyTree


class VariationalFamily:
    """Base class of the variational families.

    Subclasses are frozen dataclasses with their structural options (e.g. ``rank``) as fields, set
    ``distribution`` to the distribution class they build, and implement :meth:`init`.

    Until the next release, calling a family class with the fields of its distribution (the old meaning of
    ``vi.MeanField(mean, log_scale)``) still builds that distribution, with a ``DeprecationWarning``.
    """

    distribution: ClassVar[type]

    def __new__(cls, *args: Any, **kwargs: Any):
        fields = getattr(cls, "distribution", None)
        fields = getattr(fields, "_fields", ())
        if fields and len(args) + len(kwargs) == len(fields) and set(kwargs) <= set(fields):
            warnings.warn(f"vi.{cls.__name__}(...) with distribution fields now names the family; build the "
                          f"distribution as vi.{cls.distribution.__name__}(...)", DeprecationWarning, stacklevel=2)
            return cls.distribution(*args, **kwargs)
        return super().__new__(cls)

    def init(self, key: PRNGKey, position: PyTree, init_scale: ArrayLike = 0.1) -> Family:
        """The distribution centred on ``position`` with standard deviations about ``init_scale``; ``key`` is
        for families with random initial parameters (ignored by the others)."""
        raise NotImplementedError


__all__ = ["VariationalFamily"]
