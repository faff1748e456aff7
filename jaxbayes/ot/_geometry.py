"""Geometries: where a Sinkhorn solver gets its costs from (dense matrix, or point clouds matrix-free).

A :class:`Geometry` is a pytree (``x``, ``y``, ``cost_matrix`` are leaves; the cost and the chunk size are
static) that offers the few reductions the solvers need: log-sum-exp of ``h_j - C_ij / eps`` along rows or
columns, and plan-vector products. In matrix-free mode (``chunk_size`` set) the cost matrix is never
stored: :mod:`jaxbayes.pairwise` recomputes ``chunk_size x chunk_size`` tiles (rematerialised in reverse
mode), so memory is ``O((n + m) * chunk_size)``; point clouds sharded over a mesh reduce block by block on
their own devices, with the combine described in :mod:`jaxbayes.pairwise`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxbayes import pairwise
from jaxbayes._checks import check_finite, check_floating, check_int_range, check_ndim
from jaxbayes.ot._costs import Cost, SqEuclidean, as_cost
from jaxbayes.typing import Array, ArrayLike


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Cost geometry of an OT problem between ``n`` source and ``m`` target points.

    Attributes:
      x: source points ``(n, d)`` or ``None`` (dense mode).
      y: target points ``(m, d)`` or ``None`` (dense mode).
      cost_matrix: dense ``(n, m)`` costs, or ``None`` for point clouds.
      cost: the :class:`~jaxbayes.ot.Cost` used for point clouds (static).
      chunk_size: ``None`` builds the ``(n, m)`` cost matrix (and a kernel of the same size) once per solve
        (fastest) on one device, and one block per pair of devices when the points are sharded; an int makes
        the geometry matrix-free, ``chunk_size x chunk_size`` cost tiles at a time (static).
    """

    x: Array | None
    y: Array | None
    cost_matrix: Array | None
    cost: Cost = dataclasses.field(default_factory=SqEuclidean)
    chunk_size: int | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``."""
        if self.cost_matrix is not None:
            return tuple(self.cost_matrix.shape[-2:])
        return (self.x.shape[-2], self.y.shape[-2])

    @property
    def dtype(self):
        return (self.cost_matrix if self.cost_matrix is not None else self.x).dtype

    @property
    def is_matrix_free(self) -> bool:
        return self.cost_matrix is None and self.chunk_size is not None

    def materialize(self) -> Geometry:
        """A dense geometry with the same costs (``cost_matrix`` computed if needed)."""
        if self.cost_matrix is not None:
            return self
        placement = pairwise.placement_of(self.x, self.y)
        # Sharded points: the (n, m) matrix is split by rows like x, so every device needs all of y.
        y = self.y if placement.is_local else placement.place(self.y, None)
        return Geometry(None, None, self.cost.pairwise(self.x, y), self.cost, None)

    def dense_or_self(self) -> Geometry:
        """Materialise point clouds without ``chunk_size`` on one device (one cost matrix per solve), else
        ``self`` (sharded point clouds always reduce block by block through the pairwise engine)."""
        return self.materialize() if self._dense_points() else self

    def transpose(self) -> Geometry:
        """The geometry of the transposed problem (``m`` sources, ``n`` targets)."""
        if self.cost_matrix is not None:
            return Geometry(None, None, self.cost_matrix.T, self.cost, self.chunk_size)
        return Geometry(self.y, self.x, None, _Transposed(self.cost), self.chunk_size)

    def cost_scale(self) -> Array:
        """Mean of the cost matrix over all pairs (unweighted): the scale of a relative epsilon."""
        if self.cost_matrix is not None:
            return jnp.mean(self.cost_matrix)
        if isinstance(self.cost, SqEuclidean):
            # mean_ij |x_i - y_j|^2 = mean |x|^2 + mean |y|^2 - 2 mean(x) . mean(y), no n*m work.
            return (jnp.mean(jnp.sum(self.x**2, -1)) + jnp.mean(jnp.sum(self.y**2, -1))
                    - 2.0 * jnp.dot(jnp.mean(self.x, 0), jnp.mean(self.y, 0)))
        c = self._dense()
        if c is not None:
            return jnp.mean(c)
        sums = self._reduce(lambda _, ct, r, cc, mask: jnp.sum(jnp.where(mask[None, :], ct, 0.0), axis=1),
                            None, None, None, 1)
        return jnp.sum(sums) / (self.shape[0] * self.shape[1])

    # ---------------------------------------------------------------- matrix-free reductions
    def _reduce(self, tile_fn, row_args, col_args, params, axis: int, combine: str = "sum"):
        """:func:`jaxbayes.pairwise.reduce` over rows (``axis=1``: rows of C) or columns (``axis=0``: rows of
        C^T); ``tile_fn(params, c_tile, row_args, col_args, mask)`` gets the cost tile."""
        cost = self.cost
        rows, cols = (self.x, self.y) if axis == 1 else (self.y, self.x)

        def tile(p, rt, ct, ra, ca, mask):
            c = cost.pairwise(rt, ct) if axis == 1 else cost.pairwise(ct, rt).T
            return tile_fn(p, c, ra, ca, mask)

        return pairwise.reduce(tile, rows, cols, row_args, col_args, params=params, combine=combine,
                               chunk_size=self.chunk_size)

    def _dense(self) -> Array | None:
        """The cost matrix when this geometry is dense (stored, or point clouds on one device without a
        chunk size); ``None`` when reductions go through the pairwise engine."""
        if self.cost_matrix is not None:
            return self.cost_matrix
        return self.cost.pairwise(self.x, self.y) if self._dense_points() else None

    def _dense_points(self) -> bool:
        """Point clouds on one device without a chunk size: reduced through one ``(n, m)`` cost matrix."""
        return (self.cost_matrix is None and self.chunk_size is None
                and pairwise.placement_of(self.x, self.y).is_local)

    def lse(self, h: Array, eps: Array, axis: int) -> Array:
        r"""Row (``axis=1``) or column (``axis=0``) log-sum-exp of :math:`h - C / \varepsilon`.

        ``axis=1``: ``out_i = logsumexp_j (h_j - C_ij / eps)`` with ``h`` of shape ``(m,)``;
        ``axis=0``: ``out_j = logsumexp_i (h_i - C_ij / eps)`` with ``h`` of shape ``(n,)``.
        """
        c = self._dense()
        if c is not None:
            return jax.nn.logsumexp(h[None, :] - (c if axis == 1 else c.T) / eps, axis=1)
        return pairwise.logsumexp(self.cost.pairwise, self.x, self.y, h, eps=eps, axis=axis,
                                  chunk_size=self.chunk_size)

    def plan_apply(self, f: Array, g: Array, log_a: Array, log_b: Array, eps: Array, v: Array,
                   axis: int) -> Array:
        r"""Products with :math:`P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij}) / \varepsilon)`.

        ``axis=1``: ``P @ v`` with ``v`` of shape ``(m,)`` or ``(m, k)``; ``axis=0``: ``P.T @ v`` with ``v``
        of shape ``(n,)`` or ``(n, k)``.
        """
        row_pot, row_log, col_pot, col_log = (f, log_a, g, log_b) if axis == 1 else (g, log_b, f, log_a)
        c = self._dense()
        if c is not None:
            c = c if axis == 1 else c.T
            logp = row_log[:, None] + row_pot[:, None] / eps + (col_log + col_pot / eps)[None, :] - c / eps
            return jnp.exp(logp) @ v

        def tile(e, ct, r, cargs, mask):
            rterm, (cterm, vc) = r, cargs
            logp = rterm[:, None] + cterm[None, :] - ct / e
            return jnp.where(mask[None, :], jnp.exp(logp), 0.0) @ vc

        return self._reduce(tile, row_log + row_pot / eps, (col_log + col_pot / eps, v), eps, axis)

    def plan_cost_rows(self, f, g, log_a, log_b, eps) -> tuple[Array, Array]:
        """Per-row ``(sum_j P_ij, sum_j P_ij C_ij)`` in one pass."""
        c = self._dense()
        if c is not None:
            p = jnp.exp(log_a[:, None] + f[:, None] / eps + (log_b + g / eps)[None, :] - c / eps)
            return jnp.sum(p, axis=1), jnp.sum(p * c, axis=1)

        def tile(e, ct, rterm, cterm, mask):
            p = jnp.where(mask[None, :], jnp.exp(rterm[:, None] + cterm[None, :] - ct / e), 0.0)
            return jnp.sum(p, axis=1), jnp.sum(p * jnp.where(mask[None, :], ct, 0.0), axis=1)

        return self._reduce(tile, log_a + f / eps, log_b + g / eps, eps, 1)


class _Transposed(Cost):
    """``c_T(y, x) = c(x, y)`` so a transposed point-cloud geometry keeps its costs."""

    def __init__(self, base: Cost):
        self.base = base

    def __call__(self, x, y):
        return self.base(y, x)

    def pairwise(self, x, y):
        return self.base.pairwise(y, x).T

    def __eq__(self, other):
        return isinstance(other, _Transposed) and other.base == self.base

    def __hash__(self):
        return hash(("T", self.base))


jax.tree_util.register_dataclass(Geometry, data_fields=["x", "y", "cost_matrix"],
                                 meta_fields=["cost", "chunk_size"])


def pointcloud(x: ArrayLike, y: ArrayLike | None = None, *, cost: Any = "sqeuclidean",
               chunk_size: int | None = None) -> Geometry:
    """Geometry between two point clouds.

    Args:
      x: source points, shape ``(n, d)``, ``n >= 1``, finite (NaN or inf raise ``ValueError`` naming the
        argument when the points are concrete; traced points under ``jit`` are not inspected).
      y: target points, shape ``(m, d)``; ``None`` means ``y = x``.
      cost: a name (``"sqeuclidean"``, ``"euclidean"``, ``"cosine"``), a :class:`Cost`, an ott-jax
        ``CostFn`` or a function of two points.
      chunk_size: ``None`` for a dense cost matrix built once per solve; an int for the matrix-free mode,
        with memory ``O((n + m) * chunk_size)``.

    Returns:
      A :class:`Geometry`.

    Example:
      >>> import jax.numpy as jnp
      >>> geom = pointcloud(jnp.zeros((3, 2)), jnp.ones((4, 2)), chunk_size=2)
      >>> geom.shape, float(geom.cost_scale())
      ((3, 4), 2.0)
    """
    x = jnp.asarray(x)
    y = x if y is None else jnp.asarray(y)
    check_ndim("x", x, 2)
    check_ndim("y", y, 2)
    check_floating("x", x)
    check_floating("y", y)
    _check_points("x", x)
    _check_points("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of features, got x {x.shape} and y {y.shape}")
    if chunk_size is not None:
        check_int_range("chunk_size", chunk_size, 1)
    return Geometry(x, y, None, as_cost(cost), chunk_size)


def costmatrix(cost_matrix: ArrayLike) -> Geometry:
    """Geometry from a dense ``(n, m)`` cost matrix (``n, m >= 1``; finite when concrete, else ``ValueError``).

    Example:
      >>> costmatrix([[0.0, 1.0], [1.0, 0.0]]).shape
      (2, 2)
    """
    c = jnp.asarray(cost_matrix)
    check_ndim("cost_matrix", c, 2)
    check_floating("cost_matrix", c)
    if 0 in c.shape:
        raise ValueError(f"cost_matrix must have at least one row and one column, got shape {c.shape}")
    check_finite("cost_matrix", c)
    return Geometry(None, None, c, SqEuclidean(), None)


def _check_points(name: str, pts: Array) -> None:
    """The checks every solver relies on, once at construction: at least one point, finite coordinates
    (checked when concrete; under ``jit`` traced points are not inspected and non-finite ones give NaN)."""
    if pts.shape[0] == 0:
        raise ValueError(f"{name} must contain at least one point, got shape {pts.shape}")
    check_finite(name, pts)


def as_geometry(geom: Any) -> Geometry:
    """Accept a :class:`Geometry`, a 2-D cost matrix, or an ott-jax geometry (``PointCloud`` keeps its points
    and cost, with its ``batch_size`` as the chunk size; any other ott geometry gives its dense cost matrix)."""
    if isinstance(geom, Geometry):
        return geom
    try:
        from ott.geometry import geometry as ott_geometry
        from ott.geometry import pointcloud as ott_pointcloud
    except ImportError:  # pragma: no cover
        ott_geometry = ott_pointcloud = None
    if ott_pointcloud is not None and isinstance(geom, ott_pointcloud.PointCloud):
        if getattr(geom, "_scale_cost", 1.0) != 1.0:  # ott rescales its costs: use them as they are
            return costmatrix(geom.cost_matrix)
        chunk = getattr(geom, "batch_size", getattr(geom, "_batch_size", None))
        return pointcloud(geom.x, geom.y, cost=geom.cost_fn, chunk_size=chunk)
    if ott_geometry is not None and isinstance(geom, ott_geometry.Geometry):
        return costmatrix(geom.cost_matrix)
    if hasattr(geom, "shape") or isinstance(geom, list | tuple):
        return costmatrix(geom)
    raise TypeError(f"geom must be a Geometry, a cost matrix or an ott-jax geometry, got {type(geom).__name__}")
