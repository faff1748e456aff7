r"""Partial OT (transport a fraction of the mass) and progressive partial OT for imbalanced clustering.

* :func:`partial_ot`: entropic partial OT with the dummy-point reformulation (Chapel, Alaya, Gasso 2020):
  append a dummy row and column with zero cost and a large cost between the two dummies, give them masses
  :math:`|b| - s` and :math:`|a| - s`; a balanced OT plan of the extended problem restricted to the real
  block transports exactly mass :math:`s` with :math:`P\mathbf 1 \le a`, :math:`P^\top\mathbf 1 \le b`.
* :func:`progressive_partial_ot` / :func:`pseudo_labels`: P^2OT / SP^2OT (Zhang, Liu, He; ICLR 2024 and its
  journal extension). For ``N`` samples, ``K`` clusters, cost :math:`C = -\log p(k \mid x_i)`, mass
  :math:`\rho`:

  .. math:: \min_{Q \ge 0} \langle Q, C\rangle + \varepsilon\,\mathrm{KL}
     + \lambda\,\mathrm{KL}(Q^\top\mathbf 1 \,\|\, \tfrac{\rho}{K}\mathbf 1)
     \quad\text{s.t. } Q\mathbf 1 \le \tfrac1N\mathbf 1,\; \mathbf 1^\top Q \mathbf 1 = \rho,

  solved as OT to ``K + 1`` columns (a zero-cost dummy column of exact mass :math:`1 - \rho` absorbs the
  untransported mass) with per-column relaxation: :math:`\tau_k = \lambda / (\lambda + \varepsilon)` on
  the ``K`` cluster columns and :math:`\tau = 1` on the dummy. The semantic (kNN-graph) regulariser of
  SP^2OT is not included.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxbayes._checks import check_choice, check_ndim, concrete_value
from jaxbayes.ot._problem import Problem, as_problem
from jaxbayes.ot._sinkhorn import SinkhornOutput, sinkhorn
from jaxbayes.parallel import unshard
from jaxbayes.typing import Array, ArrayLike
from jaxbayes.typing import Geometry as GeometryLike


class PartialOTOutput(NamedTuple):
    """Result of :func:`partial_ot`.

    Attributes:
      f, g: potentials of the real points (the first ``n`` / ``m`` of the extended problem's).
      cost: the regularised objective (the entropic OT value of the extended problem, see ``output.cost``).
      transport_cost: :math:`\\langle P, C\\rangle` of the partial plan.
      mass: mass transported by the plan.
      converged, n_iters, error: those of the extended solve.
      output: the :class:`SinkhornOutput` of the extended ``(n + 1, m + 1)`` problem.
    """

    f: Array
    g: Array
    cost: Array
    transport_cost: Array
    mass: Array
    converged: Array
    n_iters: Array
    error: Array
    output: SinkhornOutput

    def plan(self) -> Array:
        """The ``(n, m)`` partial plan (row sums <= a, column sums <= b, total ~ ``mass``)."""
        n, m = self.f.shape[0], self.g.shape[0]
        return self.output.plan()[:n, :m]


def partial_ot(
    geom: GeometryLike | Problem | ArrayLike,
    a: ArrayLike | None = None,
    b: ArrayLike | None = None,
    *,
    mass: ArrayLike,
    epsilon: ArrayLike = 0.01,
    relative_epsilon: bool = True,
    **sinkhorn_kwargs: Any,
) -> PartialOTOutput:
    """Entropic partial optimal transport of ``mass`` units between ``a`` and ``b`` (dense).

    Args:
      geom: geometry, cost matrix or :class:`Problem` (materialised: the extended problem is dense).
      a, b: weights (default uniform, mass 1 each).
      mass: mass to transport, in ``(0, min(sum a, sum b)]``.
      epsilon: regularisation (relative to the mean of the original cost matrix by default).
      relative_epsilon: see :func:`sinkhorn`.
      **sinkhorn_kwargs: passed to :func:`sinkhorn`.

    Returns:
      A :class:`PartialOTOutput`.

    Example:
      >>> import jax.numpy as jnp
      >>> c = jnp.array([[0.0, 5.0], [5.0, 5.0]])
      >>> out = partial_ot(c, mass=0.5, epsilon=1e-3)
      >>> [round(v, 3) for v in out.plan().ravel().tolist()]
      [0.5, 0.0, 0.0, 0.0]
    """
    prob = as_problem(geom, a, b, equal_mass=False)
    # the extended (n + 1, m + 1) problem is dense and does not split evenly: gather sharded inputs (Explicit
    # meshes refuse the scatter of a row-sharded block into it)
    c, a, b = unshard((prob.geom.materialize().cost_matrix, prob.a, prob.b))
    n, m = c.shape
    s = jnp.asarray(mass, c.dtype)
    sv, av, bv = concrete_value(s), concrete_value(a), concrete_value(b)
    if sv is not None and av is not None and bv is not None:
        top = min(float(np.sum(av)), float(np.sum(bv)))
        if not 0.0 < float(sv) <= top * (1 + 1e-6):
            raise ValueError(f"mass must be in (0, min(sum(a), sum(b))] = (0, {top:.6g}], got {float(sv)!r}")
    eps = jnp.asarray(epsilon, c.dtype) * (jnp.mean(c) if relative_epsilon else 1.0)
    big = 2.0 * jnp.max(c) + 50.0 * eps
    c_ext = jnp.zeros((n + 1, m + 1), c.dtype).at[:n, :m].set(c).at[n, m].set(big)
    a_ext = jnp.concatenate([a, jnp.maximum(jnp.sum(b) - s, 0.0)[None]])
    b_ext = jnp.concatenate([b, jnp.maximum(jnp.sum(a) - s, 0.0)[None]])
    out = sinkhorn(c_ext, a_ext, b_ext, epsilon=eps, relative_epsilon=False, **sinkhorn_kwargs)
    plan = out.plan()[:n, :m]
    return PartialOTOutput(out.f[:n], out.g[:m], out.cost, jnp.sum(plan * c), jnp.sum(plan), out.converged,
                           out.n_iters, out.error, out)


def mass_schedule(step: ArrayLike, total_steps: int, *, start: float = 0.1, end: float = 1.0,
                  kind: str = "sigmoid") -> Array:
    """Transported mass for progressive partial OT at ``step`` of ``total_steps``.

    ``"sigmoid"``: :math:`\\rho_0 + (\\rho_1 - \\rho_0)\\exp(-5(1 - t)^2)` with :math:`t = \\min(s/T, 1)`
    (the ramp-up used by P^2OT); ``"linear"``: :math:`\\rho_0 + (\\rho_1 - \\rho_0) t`.

    Example:
      >>> [round(float(mass_schedule(s, 10, kind="linear")), 2) for s in (0, 5, 10)]
      [0.1, 0.55, 1.0]
    """
    check_choice("kind", kind, ("sigmoid", "linear"))
    if not 0.0 < start <= end <= 1.0:
        raise ValueError(f"need 0 < start <= end <= 1, got start={start!r}, end={end!r}")
    t = jnp.clip(jnp.asarray(step, jnp.float32) / total_steps, 0.0, 1.0)
    ramp = t if kind == "linear" else jnp.exp(-5.0 * (1.0 - t) ** 2)
    return start + (end - start) * ramp


class PseudoLabels(NamedTuple):
    """Result of :func:`pseudo_labels`.

    Attributes:
      labels: ``(N,)`` cluster index ``argmax_k Q_ik``.
      weights: ``(N,)`` fraction of each sample's mass sent to real clusters (``N * sum_k Q_ik``, in [0, 1]).
      selected: ``(N,)`` the ``round(mass * N)`` samples with the largest ``weights`` (trusted pseudo-labels).
      plan: ``(N, K)`` the partial plan Q.
      cluster_mass: ``(K,)`` column sums of Q.
      output: the :class:`SinkhornOutput` of the ``(N, K + 1)`` problem.
    """

    labels: Array
    weights: Array
    selected: Array
    plan: Array
    cluster_mass: Array
    output: SinkhornOutput


def progressive_partial_ot(cost: ArrayLike, *, mass: ArrayLike, epsilon: ArrayLike = 0.1,
                           reg_kl: ArrayLike = 1.0, **sinkhorn_kwargs: Any) -> SinkhornOutput:
    """Solve the P^2OT problem (module docstring) for an ``(N, K)`` cost; returns the ``(N, K + 1)`` output.

    Args:
      cost: ``(N, K)`` costs, typically ``-log p(k | x_i)``.
      mass: transported mass :math:`\\rho \\in (0, 1]` (see :func:`mass_schedule`).
      epsilon: absolute entropic regularisation.
      reg_kl: :math:`\\lambda > 0`, strength of the KL pull of cluster sizes towards uniform.
      **sinkhorn_kwargs: passed to :func:`sinkhorn`.

    Returns:
      The :class:`SinkhornOutput` of the extended problem (last column: the dummy).
    """
    c = jnp.asarray(cost)
    check_ndim("cost", c, 2)
    n, k = c.shape
    rho = jnp.asarray(mass, c.dtype)
    v = concrete_value(rho)
    if v is not None and not 0.0 < float(v) <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {float(v)!r}")
    eps = jnp.asarray(epsilon, c.dtype)
    lam = jnp.asarray(reg_kl, c.dtype)
    if (lv := concrete_value(lam)) is not None and not float(lv) > 0:
        raise ValueError(f"reg_kl must be > 0, got {float(lv)!r}")
    c_ext = jnp.concatenate([c, jnp.zeros((n, 1), c.dtype)], axis=1)
    a = jnp.full((n,), 1.0 / n, c.dtype)
    b = jnp.concatenate([jnp.full((k,), 1.0 / k, c.dtype) * rho, (1.0 - rho)[None]])
    tau_b = jnp.concatenate([jnp.full((k,), 1.0, c.dtype) * lam / (lam + eps), jnp.ones((1,), c.dtype)])
    return sinkhorn(c_ext, a, b, epsilon=eps, relative_epsilon=False, tau_b=tau_b, **sinkhorn_kwargs)


def pseudo_labels(log_probs: ArrayLike, *, mass: ArrayLike, epsilon: ArrayLike = 0.1, reg_kl: ArrayLike = 1.0,
                  **sinkhorn_kwargs: Any) -> PseudoLabels:
    """Pseudo-labels for imbalanced clustering from ``(N, K)`` log-probabilities by progressive partial OT.

    Args:
      log_probs: ``(N, K)`` log p(k | x_i) (cost is ``-log_probs``).
      mass, epsilon, reg_kl, **sinkhorn_kwargs: see :func:`progressive_partial_ot`.

    Returns:
      A :class:`PseudoLabels`.

    Example:
      >>> import jax.numpy as jnp
      >>> lp = jnp.log(jnp.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.5, 0.5]]))
      >>> out = pseudo_labels(lp, mass=0.5, epsilon=0.05)
      >>> out.labels.tolist(), out.selected.tolist()
      ([0, 0, 1, 1], [True, False, True, False])
    """
    lp = jnp.asarray(log_probs)
    out = progressive_partial_ot(-lp, mass=mass, epsilon=epsilon, reg_kl=reg_kl, **sinkhorn_kwargs)
    q = out.plan()
    n, k = lp.shape
    plan = q[:, :k]
    weights = n * jnp.sum(plan, axis=1)
    ranks = jnp.argsort(jnp.argsort(-weights))
    selected = ranks < jnp.round(jnp.asarray(mass, weights.dtype) * n)
    return PseudoLabels(jnp.argmax(plan, axis=1), weights, selected, plan, jnp.sum(plan, axis=0), out)
