r"""The linear OT problem: a geometry, the two weight vectors and the marginal relaxations (one place for the
defaults and checks every solver shares).

.. math:: \min_{P \ge 0} \langle P, C\rangle + (\text{regulariser}) + \rho_a \mathrm{KL}(P\mathbf 1 \,\|\, a)
   + \rho_b \mathrm{KL}(P^\top\mathbf 1 \,\|\, b), \qquad \tau = \rho / (\rho + \varepsilon) \in (0, 1]

(``tau = 1``: the marginal is enforced exactly; the idea of ott-jax's ``LinearProblem``). Solvers take a
:class:`Problem` or, for convenience, a geometry and weights, and build it with :func:`as_problem`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes._checks import check_finite, check_positive, concrete_value
from jaxbayes.ot._geometry import Geometry, as_geometry
from jaxbayes.typing import Array, ArrayLike


@dataclasses.dataclass(frozen=True)
class Problem:
    """A linear OT problem (a pytree; build it with :func:`as_problem`, which checks it).

    Attributes:
      geom: the :class:`~jaxbayes.ot.Geometry` (costs between ``n`` sources and ``m`` targets).
      a: source weights ``(n,)``, non-negative, positive total mass.
      b: target weights ``(m,)``.
      tau_a: source relaxation ``(n,)`` in ``(0, 1]`` (``1``: the row marginal is exact).
      tau_b: target relaxation ``(m,)``.
    """

    geom: Geometry
    a: Array
    b: Array
    tau_a: Array
    tau_b: Array

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``."""
        return self.geom.shape

    @property
    def balanced(self) -> bool:
        """Both marginals exact (``tau_a == tau_b == 1``), known at trace time (``False`` if traced)."""
        return _static_balanced(self.tau_a) and _static_balanced(self.tau_b)


jax.tree_util.register_dataclass(Problem, data_fields=["geom", "a", "b", "tau_a", "tau_b"], meta_fields=[])


def as_problem(geom: Any, a: ArrayLike | None = None, b: ArrayLike | None = None, *, tau_a: ArrayLike = 1.0,
               tau_b: ArrayLike = 1.0, equal_mass: bool | None = None) -> Problem:
    """Build and check a :class:`Problem` (``geom`` may already be one; then ``a``, ``b``, ``tau_*`` must be
    left at their defaults).

    Weights default to uniform ``1/n`` and ``1/m``; they must be finite, non-negative, of positive total mass
    and match the geometry's shape; ``tau`` a scalar or one per point, in ``(0, 1]``. ``equal_mass``: require
    ``sum(a) == sum(b)`` (default: when the problem is balanced).

    Example:
      >>> import jax.numpy as jnp
      >>> p = as_problem(jnp.ones((2, 3)))
      >>> p.shape, p.b.tolist(), p.balanced
      ((2, 3), [0.3333333432674408, 0.3333333432674408, 0.3333333432674408], True)
    """
    if isinstance(geom, Problem):
        if a is not None or b is not None:
            raise ValueError("a and b must be None when geom is already a Problem (they are its weights)")
        prob = geom
    else:
        geom = as_geometry(geom)
        n, m = geom.shape
        dtype = jnp.result_type(geom.dtype, jnp.float32)
        a = jnp.full((n,), 1.0 / n, dtype) if a is None else jnp.asarray(a, dtype)
        b = jnp.full((m,), 1.0 / m, dtype) if b is None else jnp.asarray(b, dtype)
        _check_weights(a, b, n, m)
        prob = Problem(geom, a, b, _check_tau("tau_a", tau_a, n, dtype), _check_tau("tau_b", tau_b, m, dtype))
    if prob.balanced if equal_mass is None else equal_mass:
        _check_equal_mass(prob.a, prob.b)
    return prob


def _static_balanced(tau) -> bool:
    v = concrete_value(tau)
    return v is not None and bool(np.all(v >= 1))


def _check_weights(a, b, n, m):
    if a.shape != (n,):
        raise ValueError(f"a must have shape ({n},) to match the geometry, got {a.shape}")
    if b.shape != (m,):
        raise ValueError(f"b must have shape ({m},) to match the geometry, got {b.shape}")
    for name, w in (("a", a), ("b", b)):
        check_finite(name, w)
        check_positive(name, w, strict=False)
        v = concrete_value(w)
        if v is not None and not np.sum(v) > 0:
            raise ValueError(f"{name} must have positive total mass, got {float(np.sum(v))}")


def _check_equal_mass(a, b):
    va, vb = concrete_value(a), concrete_value(b)
    if va is None or vb is None:
        return
    sa, sb = float(np.sum(va)), float(np.sum(vb))
    if abs(sa - sb) > 1e-4 * max(sa, sb):
        raise ValueError(f"a and b must have the same total mass in balanced mode (tau_a = tau_b = 1), got "
                         f"sum(a) = {sa:.6g} and sum(b) = {sb:.6g}; use tau_a/tau_b < 1 for unbalanced OT")


def _check_tau(name, tau, size, dtype):
    t = jnp.asarray(tau, dtype)
    if t.ndim not in (0, 1) or (t.ndim == 1 and t.shape[0] != size):
        raise ValueError(f"{name} must be a scalar or have shape ({size},), got shape {t.shape}")
    v = concrete_value(t)
    if v is not None and not np.all((v > 0) & (v <= 1)):
        raise ValueError(f"{name} must be in (0, 1], got {v.min() if v.ndim else v.item()!r}")
    return jnp.broadcast_to(t, (size,))


__all__ = ["Problem", "as_problem"]
