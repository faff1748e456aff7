"""Names of the Gaussian variational families and :func:`as_family`, which turns a name into a family object.

* :class:`jaxbayes.vi.MeanField` builds ``N(m, diag(s^2))`` (:class:`jaxbayes.vi.MeanFieldNormal`);
* :class:`jaxbayes.vi.LowRank` builds ``N(m, D^2 + F F^T)`` (:class:`jaxbayes.vi.LowRankNormal`);
* :class:`jaxbayes.vi.FullRank` builds ``N(m, L L^T)`` (:class:`jaxbayes.vi.FullRankNormal`);
* :class:`jaxbayes.vi.Flow` builds a spline-coupling normalizing flow (:class:`jaxbayes.vi.FlowNormal`).

The strings ``"meanfield"``, ``"lowrank"``, ``"fullrank"`` and ``"flow"`` are shorthands; a new family is a
:class:`jaxbayes.vi.VariationalFamily` subclass in its own file, passed as an object.
"""

from __future__ import annotations

from jaxbayes.vi._family import VariationalFamily
from jaxbayes.vi._flow import Flow
from jaxbayes.vi._fullrank import FullRank
from jaxbayes.vi._lowrank import LowRank
from jaxbayes.vi._meanfield import MeanField

FAMILIES: dict[str, type[VariationalFamily]] = {"meanfield": MeanField, "lowrank": LowRank, "fullrank": FullRank,
                                                "flow": Flow}


def as_family(family: str | VariationalFamily, *, rank: int | None = None) -> VariationalFamily:
    """Turn ``family`` into a :class:`VariationalFamily` object.

    Args:
      family: ``"meanfield"``, ``"lowrank"``, ``"fullrank"``, ``"flow"`` or a family object (returned as is).
      rank: the low-rank factor's rank for ``"lowrank"`` (default 1; ignored by the other names); a family
        object carries its own.

    Example:
      >>> as_family("lowrank", rank=2)
      LowRank(rank=2, factor_scale=0.001)
    """
    if isinstance(family, VariationalFamily):
        if rank is not None:
            raise ValueError(f"rank is an option of the 'lowrank' shorthand; {family!r} carries its own options")
        return family
    if isinstance(family, str):
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {sorted(FAMILIES)} or a VariationalFamily, got {family!r}")
        # rank is ignored by the other shorthands (as it always was), so one set of keywords serves them all
        return FAMILIES[family](**({} if rank is None or family != "lowrank" else {"rank": rank}))
    raise TypeError(f"family must be a name or a VariationalFamily, got {type(family).__name__}")


__all__ = ["FAMILIES", "as_family"]
