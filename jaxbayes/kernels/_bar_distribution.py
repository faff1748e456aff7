r"""The bar ("Riemann") distribution of prior-data fitted networks (Müller et al., "Transformers Can Do Bayesian
Inference", ICLR 2022, Section 4.1): a histogram density over buckets whose borders are prior quantiles, with
optional half-normal tails. Used by :func:`jaxbayes.kernels.pfn`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erfinv

from jaxbayes._checks import check_int_range, check_ndim, concrete_value
from jaxbayes.typing import Array, ArrayLike

# the half-normal scale s whose median s sqrt2 erfinv(1/2) is the outer bucket's width
_HALF_NORMAL_MEDIAN = math.sqrt(2.0) * 0.4769362762044699


def bar_borders(y_samples: ArrayLike, num_buckets: int) -> Array:
    """Bucket borders ``b_0 < ... < b_B``: the ``i / B`` quantiles of ``y_samples`` (all entries pooled), so
    that every bucket holds the same prior mass and uniform logits give (approximately) the prior marginal.

    Example:
      >>> import jax.numpy as jnp
      >>> bar_borders(jnp.arange(9.0), 4).tolist()
      [0.0, 2.0, 4.0, 6.0, 8.0]
    """
    num_buckets = check_int_range("num_buckets", num_buckets, 2)
    y = jnp.ravel(jnp.asarray(y_samples))
    if y.size < num_buckets + 1:
        raise ValueError(f"y_samples needs at least num_buckets + 1 = {num_buckets + 1} values, got {y.size}")
    borders = jnp.quantile(y, jnp.linspace(0.0, 1.0, num_buckets + 1, dtype=y.dtype))
    _check_increasing(borders)
    return borders


def _check_increasing(borders: Array) -> None:
    b = concrete_value(borders)
    if b is not None and not (b.size and (np.diff(b, axis=-1) > 0).all()):
        raise ValueError("borders must be strictly increasing (ties in the prior samples give empty buckets)")


def _take(a: Array, idx: Array) -> Array:
    """``a[..., idx]`` per batch element."""
    return jnp.take_along_axis(a, idx[..., None], axis=-1)[..., 0]


@dataclasses.dataclass(frozen=True)
class BarDistribution:
    r"""The "Riemann" distribution of a PFN: a histogram density on ``B`` buckets (a pytree).

    Bucket ``i`` ``[b_i, b_{i+1}]`` of width ``w_i`` has probability ``p_i = softmax(logits)_i`` and
    density ``p_i / w_i``. With ``tails`` bucket ``0`` becomes the half-normal
    ``p_0 HN(b_1 - y; s_0)`` on ``(-inf, b_1]`` and bucket ``B-1`` the half-normal
    ``p_{B-1} HN(y - b_{B-1}; s_{B-1})`` on ``[b_{B-1}, inf)``, with ``s_i = w_i / (sqrt2 erfinv(1/2))``
    (half of the bucket's mass stays inside it), so every ``y`` has a finite density.

    Attributes:
      logits: ``(..., B)`` bucket logits.
      borders: ``(B + 1,)`` strictly increasing borders shared by the batch, or ``(k..., B + 1)`` whose
        batch axes are the leading batch axes of the logits (as ``vmap`` stacks them).
      tails: half-normal outer buckets (static).

    Example:
      >>> import jax.numpy as jnp
      >>> bar = BarDistribution(jnp.zeros(2), jnp.array([0.0, 1.0, 3.0]), tails=False)
      >>> [round(float(v), 4) for v in bar.log_prob(jnp.array([0.5, 2.0]))], float(bar.mean)
      ([-0.6931, -1.3863], 1.25)
      >>> float(bar.quantile(0.75))
      2.0
    """

    logits: Array
    borders: Array
    tails: bool = dataclasses.field(default=True, metadata=dict(static=True))

    def __post_init__(self):
        if hasattr(self.logits, "shape") and hasattr(self.borders, "shape"):  # not for pytree placeholders
            check_ndim("borders", self.borders, tuple(range(1, 33)))
            num_buckets = self.borders.shape[-1] - 1
            if num_buckets < 2:
                raise ValueError(f"borders must have at least 3 entries (2 buckets), got {num_buckets + 1}")
            if self.logits.ndim < self.borders.ndim or self.logits.shape[-1] != num_buckets:
                raise ValueError(f"logits must end in the number of buckets {num_buckets} (borders.shape[-1] - 1), "
                                 f"got shape {self.logits.shape}")
            _check_increasing(self.borders)

    @property
    def probs(self) -> Array:
        """``(..., B)`` bucket probabilities."""
        return jax.nn.softmax(self.logits, axis=-1)

    def _geometry(self, value: ArrayLike):
        """``value``, borders, widths, log-probabilities and tail scales, all broadcast to one batch shape."""
        logp = jax.nn.log_softmax(self.logits, axis=-1)
        b = jnp.asarray(self.borders)
        # batched borders lead the logits' batch axes (as vmap stacks them): (k, B + 1) with logits (k, m, B)
        b = b.reshape(*b.shape[:-1], *(1,) * (logp.ndim - b.ndim), b.shape[-1])
        value = jnp.asarray(value, logp.dtype)
        shape = jnp.broadcast_shapes(value.shape, logp.shape[:-1], b.shape[:-1])
        b = jnp.broadcast_to(b, (*shape, b.shape[-1]))
        w = jnp.diff(b, axis=-1)
        logp = jnp.broadcast_to(logp, (*shape, logp.shape[-1]))
        return jnp.broadcast_to(value, shape), b, w, logp, w[..., 0] / _HALF_NORMAL_MEDIAN, \
            w[..., -1] / _HALF_NORMAL_MEDIAN

    def log_prob(self, y: ArrayLike) -> Array:
        """Log density at ``y`` (broadcast against the batch shape); ``-inf`` outside ``[b_0, b_B]`` without
        tails."""
        y, b, w, logp, s_left, s_right = self._geometry(y)
        # bucket i holds b_i <= y < b_{i+1} (the last one also y = b_B)
        idx = jnp.clip(jnp.sum(b[..., 1:] <= y[..., None], axis=-1), 0, w.shape[-1] - 1)
        inside = _take(logp, idx) - jnp.log(_take(w, idx))
        if not self.tails:
            return jnp.where((y >= b[..., 0]) & (y <= b[..., -1]), inside, -jnp.inf)
        log_hn = lambda t, s: 0.5 * math.log(2 / math.pi) - jnp.log(s) - 0.5 * (t / s) ** 2  # noqa: E731
        left = logp[..., 0] + log_hn(b[..., 1] - y, s_left)
        right = logp[..., -1] + log_hn(y - b[..., -2], s_right)
        return jnp.where(y <= b[..., 1], left, jnp.where(y >= b[..., -2], right, inside))

    @property
    def mean(self) -> Array:
        """``sum_i p_i m_i`` with ``m_i`` the bucket midpoints (the half-normals' means ``b_1 - s_0 sqrt(2/pi)``,
        ``b_{B-1} + s_{B-1} sqrt(2/pi)`` for the tails)."""
        _, b, w, logp, s_left, s_right = self._geometry(0.0)
        mid = b[..., :-1] + 0.5 * w
        if self.tails:
            c = math.sqrt(2 / math.pi)
            mid = mid.at[..., 0].set(b[..., 1] - c * s_left).at[..., -1].set(b[..., -2] + c * s_right)
        return jnp.sum(jnp.exp(logp) * mid, axis=-1)

    def quantile(self, q: ArrayLike) -> Array:
        """The ``q``-quantile (``q`` in ``[0, 1]``, broadcast against the batch shape): linear inside a bucket,
        the half-normal's inverse CDF in a tail."""
        q, b, w, logp, s_left, s_right = self._geometry(q)
        num_buckets = w.shape[-1]
        p = jnp.exp(logp)
        cum = jnp.cumsum(p, axis=-1)
        idx = jnp.clip(jnp.sum(cum < q[..., None], axis=-1), 0, num_buckets - 1)
        p_i = _take(p, idx)
        below = _take(cum, idx) - p_i
        frac = jnp.clip((q - below) / jnp.where(p_i > 0, p_i, 1.0), 0.0, 1.0)
        inside = _take(b, idx) + frac * _take(w, idx)
        if not self.tails:
            return inside
        sqrt2 = math.sqrt(2.0)
        p0, p_last = p[..., 0], p[..., -1]
        left = b[..., 1] - s_left * sqrt2 * erfinv(jnp.clip(1 - q / p0, 0.0, 1.0))
        right = b[..., -2] + s_right * sqrt2 * erfinv(jnp.clip((q - (1 - p_last)) / p_last, 0.0, 1.0))
        return jnp.where(idx == 0, left, jnp.where(idx == num_buckets - 1, right, inside))


jax.tree_util.register_dataclass(BarDistribution, data_fields=["logits", "borders"], meta_fields=["tails"])
