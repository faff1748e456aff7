"""Stochastic interpolants with a Gaussian base: velocity, score, loss and the SDE with tunable noise.

The one-sided interpolant ``x_t = alpha(t) z + beta(t) x_1`` (``z ~ N(0, I)``, ``x_1`` data, ``t in [0, 1]``)
has velocity ``b(t, x) = E[alpha' z + beta' x_1 | x_t = x]`` and score ``s(t, x) = -E[z | x_t = x] / alpha``;
they determine each other: ``s = (beta' x - beta b) / (alpha (alpha' beta - alpha beta'))``. The ODE
``dx = b dt`` and, for any ``eps(t) >= 0``, the SDE ``dx = (b + eps s) dt + sqrt(2 eps) dW`` carry
``N(0, I)`` at ``t = 0`` to the data at ``t = 1``. Here ``eps(t) = noise * alpha(t)``, which vanishes at the
data end so the drift stays finite.

Reference: Albergo, Boffi, Vanden-Eijnden, "Stochastic Interpolants: A Unifying Framework for Flows and
Diffusions" (2023); "linear" is rectified flow / flow matching, "trig" is ``(cos, sin)(pi t / 2)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_finite, check_int_range, check_positive, check_shape
from jaxbayes.parallel import shard_rows_like
from jaxbayes.sde._sampling import SamplerOutput
from jaxbayes.typing import Array, ArrayLike, PRNGKey

KINDS = ("linear", "trig")


@dataclasses.dataclass(frozen=True)
class Interpolant:
    """The interpolant ``alpha(t) z + beta(t) x_1``.

    ``kind="linear"``: ``(alpha, beta) = (1 - t, t)``; ``kind="trig"``: ``(cos(pi t / 2), sin(pi t / 2))``.

    Example:
      >>> Interpolant("trig").coeffs(1.0)[1].round(6).item()
      1.0
    """

    kind: str = "linear"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")

    def coeffs(self, t: ArrayLike) -> tuple[Array, Array, Array, Array]:
        """``(alpha, beta, alpha', beta')`` at ``t``."""
        t = jnp.asarray(t, jnp.result_type(float))
        if self.kind == "linear":
            one = jnp.ones_like(t)
            return 1 - t, t, -one, one
        a = 0.5 * math.pi
        return jnp.cos(a * t), jnp.sin(a * t), -a * jnp.sin(a * t), a * jnp.cos(a * t)

    def sample(self, key: PRNGKey, x1: Array, t: ArrayLike) -> tuple[Array, Array, Array]:
        """Draw ``x_t`` for one data point; returns ``(x_t, velocity target alpha' z + beta' x1, z)``."""
        z = jax.random.normal(key, jnp.shape(x1), jnp.result_type(x1))
        a, b, da, db = self.coeffs(t)
        return a * z + b * x1, da * z + db * x1, z

    def score_from_velocity(self, v: Array, x: Array, t: ArrayLike) -> Array:
        """``s = (beta' x - beta v) / (alpha (alpha' beta - alpha beta'))`` (finite for ``t < 1``)."""
        a, b, da, db = self.coeffs(t)
        return (db * x - b * v) / (a * (da * b - a * db))

    def velocity_from_score(self, s: Array, x: Array, t: ArrayLike) -> Array:
        """Inverse of :meth:`score_from_velocity` (needs ``beta > 0``, i.e. ``t > 0``)."""
        a, b, da, db = self.coeffs(t)
        return (db * x - s * a * (da * b - a * db)) / b


jax.tree_util.register_dataclass(Interpolant, data_fields=[], meta_fields=["kind"])


def interpolant_loss(key: PRNGKey, velocity_fn: Callable, interpolant: Interpolant, x1: Array) -> Array:
    """Regression of the velocity: ``E ||b(t, x_t) - (alpha' z + beta' x_1)||^2`` with ``t ~ U(0, 1)``.

    ``velocity_fn(x, t)`` is per point; ``x1`` is a batch ``(B, ...)``; the squared error is averaged over
    the data dimensions and the batch.
    """
    x1 = jnp.asarray(x1)
    if x1.ndim < 2:
        raise ValueError(f"x1 must be a batch of shape (B, ...), got shape {x1.shape}")
    kt, kz = jax.random.split(key)
    t = jax.random.uniform(kt, (x1.shape[0],), x1.dtype)
    keys = jax.random.split(kz, x1.shape[0])

    def one(k, x, ti):
        xt, target, _ = interpolant.sample(k, x, ti)
        return jnp.mean((velocity_fn(xt, ti) - target) ** 2)

    return jnp.mean(jax.vmap(one)(*shard_rows_like((keys, x1, t), x1)))


def interpolant_sampler(key: PRNGKey, velocity_fn: Callable, interpolant: Interpolant, shape: tuple[int, ...], *,
                        noise: ArrayLike = 0.0, num_steps: int = 100, x_init: Array | None = None,
                        dtype=None) -> SamplerOutput:
    r"""Carry ``N(0, I)`` to the data with ``dx = (b + eps s) dt + sqrt(2 eps) dW``, ``eps(t) = noise alpha(t)``.

    Euler (``noise = 0``, the probability-flow ODE) or Euler-Maruyama on ``num_steps`` uniform steps of
    ``[0, 1]``; ``nfe = num_steps``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> v = lambda x, t: jnp.full_like(x, 3.0) - x / (1 - t + 1e-3) * 0  # a constant velocity
      >>> out = interpolant_sampler(jax.random.key(0), v, Interpolant(), (2,), x_init=jnp.zeros(2), num_steps=4)
      >>> out.samples.tolist()
      [3.0, 3.0]
    """
    check_positive("noise", noise, strict=False)
    num_steps = check_int_range("num_steps", num_steps, 1)
    dtype = jnp.result_type(float) if dtype is None else dtype
    k_init, key = jax.random.split(key)
    if x_init is None:
        x = jax.random.normal(k_init, tuple(shape), dtype)
    else:
        check_shape("x_init", x_init, tuple(shape))
        check_finite("x_init", x_init)
        x = jnp.asarray(x_init, dtype)
    out = jax.eval_shape(velocity_fn, x, jnp.zeros((), x.dtype))
    if tuple(getattr(out, "shape", ())) != tuple(x.shape):
        raise ValueError(f"velocity_fn(x, t) must return an array of shape {x.shape}, "
                         f"got {getattr(out, 'shape', type(out).__name__)}")
    ts = jnp.linspace(0.0, 1.0, num_steps + 1, dtype=x.dtype)

    def body(x, i):
        t, dt = ts[i], ts[i + 1] - ts[i]
        v = velocity_fn(x, t)
        eps = noise * interpolant.coeffs(t)[0]
        drift = v + eps * interpolant.score_from_velocity(v, x, t)
        z = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
        return x + drift * dt + jnp.sqrt(2 * eps * dt) * z, None

    x, _ = jax.lax.scan(body, x, jnp.arange(num_steps))
    return SamplerOutput(x, jnp.asarray(num_steps, jnp.int32), jnp.asarray(True))


def gaussian_velocity(interpolant: Interpolant, mean: ArrayLike, cov: ArrayLike) -> Callable[[Array, Array], Array]:
    """Exact velocity for ``N(mean, cov)`` data.

    ``b(t, x) = beta' mu + (alpha' alpha I + beta' beta S) (alpha^2 I + beta^2 S)^{-1} (x - beta mu)``.

    Example:
      >>> import jax.numpy as jnp
      >>> v = gaussian_velocity(Interpolant(), jnp.ones(2), jnp.eye(2))
      >>> v(jnp.zeros(2), 0.0).tolist()  # at t = 0: E[x1] - z
      [1.0, 1.0]
    """
    mean = jnp.asarray(mean)
    cov = jnp.asarray(cov, mean.dtype)
    eye = jnp.eye(mean.shape[0], dtype=mean.dtype)

    def velocity_fn(x, t):
        a, b, da, db = interpolant.coeffs(t)
        cross = da * a * eye + db * b * cov
        c = a**2 * eye + b**2 * cov
        return db * mean + cross @ jnp.linalg.solve(c, x - b * mean)

    return velocity_fn
