r"""Two-sample discrepancies between sample sets: MMD, energy distance, sliced W2 and Sinkhorn divergence.

Each compares the empirical measures of ``x (n, d)`` and ``y (m, d)`` (e.g. sampler output against reference
draws). The kernel and distance sums run on the matrix-free pairwise engine (:mod:`jaxbayes.pairwise`):
``chunk_size x chunk_size`` tiles, never the ``n x m`` matrix, and sharded over a mesh when ``x`` / ``y`` are
(the engine reads the placement from the arrays). The OT metrics delegate to :mod:`jaxbayes.ot`.

* :func:`mmd2`: squared maximum mean discrepancy (Gretton et al. 2012), RBF or inverse multiquadric kernel;
  :func:`median_bandwidth` is the median heuristic for its bandwidth;
* :func:`energy_distance`: :math:`2\,E|X-Y| - E|X-X'| - E|Y-Y'|` (Székely & Rizzo 2004, 2013);
* :func:`sliced_w2`: sliced Wasserstein-2 distance (:func:`jaxbayes.ot.sliced_wasserstein`);
* :func:`sinkhorn_divergence`: debiased entropic OT (:func:`jaxbayes.ot.sinkhorn_divergence`), matrix-free.

All are pure, jit-able and differentiable in ``x`` and ``y``. Squared distances inside the tiles use the
one-matmul expansion :math:`|a|^2 + |b|^2 - 2 a\cdot b` on points shifted by the mean of ``x`` (the metrics
are translation invariant; the shift keeps the cancellation error at the scale of the spread, not of the
offset).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxbayes import ot, pairwise
from jaxbayes._checks import check_choice, check_int_range, check_ndim, check_positive
from jaxbayes.parallel import explicit_spec
from jaxbayes.typing import Array, ArrayLike, PRNGKey

KERNELS = ("rbf", "imq")


def _sq_dists(a: Array, b: Array) -> Array:
    return ot.SqEuclidean().pairwise(a, b)


def _rbf(a: Array, b: Array, h: Array) -> Array:
    return jnp.exp(-0.5 * _sq_dists(a, b) / (h * h))


def _imq(a: Array, b: Array, h: Array) -> Array:
    return jax.lax.rsqrt(1.0 + _sq_dists(a, b) / (h * h))


def _distance(a: Array, b: Array) -> Array:
    return ot.Euclidean(p=1.0).pairwise(a, b)  # gradient-safe square root (zero gradient at a == b)


def _check_sets(x: ArrayLike, y: ArrayLike, min_points: int = 1) -> tuple[Array, Array]:
    """``x``, ``y`` as arrays of one floating dtype, shifted by the mean of ``x``; ``ValueError`` on bad shapes."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_ndim("x", x, 2)
    check_ndim("y", y, 2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of features, got x {x.shape} and y {y.shape}")
    for name, v in (("x", x), ("y", y)):
        if v.shape[0] < min_points:
            what = "at least 2 points for the unbiased estimator" if min_points > 1 else "at least one point"
            raise ValueError(f"{name} must contain {what}, got shape {v.shape}")
    dtype = jnp.result_type(x, y, float)
    x, y = x.astype(dtype), y.astype(dtype)
    shift = jax.lax.stop_gradient(jnp.mean(x, axis=0))
    return x - shift, y - shift


def _total(pair_fn, a: Array, b: Array, params: Any, chunk_size: int | None) -> Array:
    """``sum_ij pair_fn(a, b)_ij`` on the pairwise engine."""
    return jnp.sum(pairwise.row_sums(pair_fn, a, b, params=params, chunk_size=chunk_size))


def _rows(v: Array, idx: np.ndarray) -> Array:
    """``v[idx]`` replicated on every device (an explicitly sharded ``v`` needs the gather's output sharding)."""
    if explicit_spec(v) is None:
        return v[idx]
    return v.at[idx].get(out_sharding=NamedSharding(jax.typeof(v).sharding.mesh, PartitionSpec()))


def median_bandwidth(x: ArrayLike, y: ArrayLike, *, max_points: int = 1000) -> Array:
    r"""Median heuristic: the median Euclidean distance between distinct points of the pooled sample.

    Uses a deterministic subsample of at most ``max_points // 2`` points of each set (evenly spaced rows), so
    the cost is ``O(max_points^2)`` whatever ``n`` and ``m``. The result is a constant for differentiation
    (``stop_gradient``), the usual convention for a data-chosen bandwidth; it is ``1`` if all the subsampled
    points coincide.

    Args:
      x, y: samples ``(n, d)``, ``(m, d)``. max_points: subsample size (``>= 2``).

    Returns:
      The scalar bandwidth :math:`h` (for :func:`mmd2`'s :math:`k(a, b) = \exp(-|a-b|^2 / (2h^2))`).

    Example:
      >>> import jax.numpy as jnp
      >>> float(median_bandwidth(jnp.array([[0.0], [1.0]]), jnp.array([[3.0]])))
      2.0
    """
    max_points = check_int_range("max_points", max_points, 2)
    x, y = _check_sets(x, y)
    half = max_points // 2
    parts = [_rows(v, np.unique(np.round(np.linspace(0, v.shape[0] - 1, min(half, v.shape[0]))).astype(int)))
             for v in (x, y)]
    z = jax.lax.stop_gradient(jnp.concatenate(parts))
    iu, ju = np.triu_indices(z.shape[0], k=1)
    med = jnp.median(_distance(z, z)[iu, ju])
    return jnp.where(med > 0, med, jnp.ones_like(med))


def mmd2(x: ArrayLike, y: ArrayLike, *, bandwidth: ArrayLike | None = None, kernel: str = "rbf",
         unbiased: bool = True, chunk_size: int | None = 1024) -> Array:
    r"""Squared maximum mean discrepancy between the samples ``x`` and ``y`` (Gretton et al. 2012, JMLR 13).

    .. math:: \mathrm{MMD}^2 = E\,k(X, X') + E\,k(Y, Y') - 2\,E\,k(X, Y)

    with ``kernel="rbf"``: :math:`k(a, b) = \exp(-|a - b|^2 / (2h^2))`, or ``kernel="imq"`` (inverse
    multiquadric): :math:`k(a, b) = (1 + |a - b|^2 / h^2)^{-1/2}`; both have :math:`k(a, a) = 1` and are
    characteristic, so the population value is zero iff the distributions agree.

    ``unbiased=True`` is the U-statistic (their eq. 3): the within-sample means run over pairs ``i != j``, the
    diagonal being removed analytically (``n`` subtracted from the sum of ``K_xx``), so its expectation is the
    population value and it can be slightly negative. ``unbiased=False`` is the V-statistic (eq. 5, all
    pairs; non-negative, biased up by ``O(1/n)``).

    Args:
      x, y: samples ``(n, d)``, ``(m, d)`` (``n, m >= 2`` for the unbiased estimator).
      bandwidth: :math:`h > 0`; ``None`` for :func:`median_bandwidth` of ``x`` and ``y``.
      kernel: ``"rbf"`` or ``"imq"``.
      unbiased: U-statistic (default) or V-statistic.
      chunk_size: tile side of the pairwise engine (``None``: one tile per device block).

    Returns:
      The scalar estimate of :math:`\mathrm{MMD}^2`.

    Example:
      >>> import jax
      >>> kx, ky = jax.random.split(jax.random.key(0))
      >>> x = jax.random.normal(kx, (500, 2))
      >>> y = jax.random.normal(ky, (500, 2)) + 1.0
      >>> round(float(mmd2(x, y, bandwidth=1.0)), 2)  # closed form 2/3 - (2/3) exp(-1/3) = 0.189
      0.19
    """
    check_choice("kernel", kernel, KERNELS)
    x, y = _check_sets(x, y, 2 if unbiased else 1)
    if bandwidth is None:
        bandwidth = median_bandwidth(x, y)
    check_positive("bandwidth", bandwidth)
    h = jnp.asarray(bandwidth, x.dtype)
    if h.ndim:
        raise ValueError(f"bandwidth must be a scalar, got shape {h.shape}")
    k = _rbf if kernel == "rbf" else _imq
    n, m = x.shape[0], y.shape[0]
    sxx, syy = _total(k, x, x, h, chunk_size), _total(k, y, y, h, chunk_size)
    sxy = _total(k, x, y, h, chunk_size)
    if unbiased:
        return (sxx - n) / (n * (n - 1)) + (syy - m) / (m * (m - 1)) - 2 * sxy / (n * m)
    return sxx / n**2 + syy / m**2 - 2 * sxy / (n * m)


def energy_distance(x: ArrayLike, y: ArrayLike, *, unbiased: bool = True, chunk_size: int | None = 1024) -> Array:
    r"""Energy distance between the samples ``x`` and ``y`` (Székely & Rizzo 2004; 2013, JSPI 143).

    .. math:: \mathcal{E}(X, Y) = 2\,E|X - Y| - E|X - X'| - E|Y - Y'| \;\ge 0,

    zero iff the distributions agree (with finite first moments); it is the MMD of the distance-induced kernel
    and twice the squared Cramér distance in 1-D. ``|.|`` is the Euclidean norm, through a square root with a
    zero gradient at coincident points, so gradients stay finite.

    ``unbiased=True`` (default) is the U-statistic: :math:`E|X - X'|` over pairs ``i != j``
    (``sum / (n (n - 1))``; the diagonal is zero), unbiased but possibly slightly negative.
    ``unbiased=False`` is the V-statistic of Székely & Rizzo (``sum / n^2``, all pairs), which is ``>= 0``.
    The cross term is the plain mean over all ``n m`` pairs in both.

    Args:
      x, y: samples ``(n, d)``, ``(m, d)`` (``n, m >= 2`` for the U-statistic).
      unbiased: U-statistic (default) or V-statistic.
      chunk_size: tile side of the pairwise engine (``None``: one tile per device block).

    Returns:
      The scalar estimate.

    Example:
      >>> import jax.numpy as jnp
      >>> x, y = jnp.array([[0.0], [1.0]]), jnp.array([[3.0], [4.0]])
      >>> float(energy_distance(x, y)), float(energy_distance(x, y, unbiased=False))
      (4.0, 5.0)
    """
    x, y = _check_sets(x, y, 2 if unbiased else 1)
    n, m = x.shape[0], y.shape[0]
    sxx, syy = _total(_distance, x, x, None, chunk_size), _total(_distance, y, y, None, chunk_size)
    sxy = _total(_distance, x, y, None, chunk_size)
    nxx, nyy = (n * (n - 1), m * (m - 1)) if unbiased else (n * n, m * m)
    return 2 * sxy / (n * m) - sxx / nxx - syy / nyy


def sliced_w2(key: PRNGKey, x: ArrayLike, y: ArrayLike, *, num_projections: int = 64,
              num_quantiles: int = 100) -> Array:
    r"""Sliced Wasserstein-2 **distance** (not squared) between the samples (Bonneel et al. 2015).

    .. math:: SW_2(\mu, \nu) = \Big(E_{\theta \sim U(S^{d-1})}\, W_2^2(\theta_\#\mu, \theta_\#\nu)\Big)^{1/2}

    estimated with ``num_projections`` random directions and ``num_quantiles`` quantiles per projection; a
    thin wrapper of :func:`jaxbayes.ot.sliced_wasserstein` (which gathers each projection on one device to
    sort it, so it is not matrix-free across devices).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jax.random.normal(jax.random.key(0), (500, 3))
      >>> round(float(sliced_w2(jax.random.key(1), x, x + jnp.array([1.0, 0.0, 0.0]))), 2)
      0.58
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    _check_sets(x, y)
    return ot.sliced_wasserstein(key, x, y, num_projections=num_projections, num_quantiles=num_quantiles)


def sinkhorn_divergence(x: ArrayLike, y: ArrayLike, *, epsilon: ArrayLike = 0.05, relative_epsilon: bool = True,
                        chunk_size: int | None = 1024, **sinkhorn_kwargs: Any) -> Array:
    r"""Debiased Sinkhorn divergence with the squared Euclidean cost (Genevay et al. 2018; Feydy et al. 2019).

    .. math:: S_\varepsilon(\mu, \nu) = \mathrm{OT}_\varepsilon(\mu, \nu) - \tfrac12\mathrm{OT}_\varepsilon(\mu, \mu)
       - \tfrac12\mathrm{OT}_\varepsilon(\nu, \nu)

    between the uniform empirical measures, ``>= 0`` and zero iff they agree; it tends to :math:`W_2^2` as
    :math:`\varepsilon \to 0`. A wrapper of :func:`jaxbayes.ot.sinkhorn_divergence` on point-cloud
    geometries (``ot.pointcloud(x, y, chunk_size=chunk_size)``), matrix-free and sharded like the inputs
    when ``chunk_size`` is an int.

    Args:
      x, y: samples ``(n, d)``, ``(m, d)``.
      epsilon: regularisation, relative to the mean cross cost unless ``relative_epsilon=False``.
      chunk_size: tile side (``None``: dense cost matrices).
      **sinkhorn_kwargs: passed to :func:`jaxbayes.ot.sinkhorn` (``tol``, ``max_iterations``, ...).

    Returns:
      The scalar divergence (use :func:`jaxbayes.ot.sinkhorn_divergence` for the solver diagnostics).

    Example:
      >>> import jax
      >>> x = jax.random.normal(jax.random.key(0), (32, 2))
      >>> float(sinkhorn_divergence(x, x, chunk_size=8)) < 1e-4
      True
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    _check_sets(x, y)
    out = ot.sinkhorn_divergence(x, y, epsilon=epsilon, relative_epsilon=relative_epsilon, chunk_size=chunk_size,
                                 **sinkhorn_kwargs)
    return out.divergence


__all__ = ["energy_distance", "median_bandwidth", "mmd2", "sinkhorn_divergence", "sliced_w2"]
