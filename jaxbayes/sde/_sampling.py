"""Shared pieces of every sampler: the result type, the starting state, the time grid, the noise schedule.

Every sampler draws **one** sample from one key, ``sampler(key, score_fn, sde, shape, ...)``, with
``score_fn(x, t)`` the score of a single point; batch with ``jax.vmap`` over
``jaxbayes.parallel.sample_keys`` (or :func:`jaxbayes.sde.sample_batch`), so a sample never depends on the
batch size or the device count. Each returns ``SamplerOutput(samples, nfe, converged)`` where ``nfe`` counts
score evaluations. Time runs from ``sde.T`` down to ``sde.eps``; the random numbers of steps
``c K .. c K + K - 1`` come from one draw with ``fold_in(key, c)`` (``K = NOISE_CHUNK`` steps per draw, see
:func:`scan_with_noise`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_finite, check_int_range, check_shape
from jaxbayes.sde._sdes import check_score_fn
from jaxbayes.typing import SDE, Array, ArrayLike, DenoiseFn, DTypeLike, PRNGKey, ScoreFn, Shape

NOISE_CHUNK = 16


class SamplerOutput(NamedTuple):
    """Result of a sampler.

    Attributes:
      samples: the sample (shape ``shape``; a leading batch axis when vmapped).
      nfe: number of score (or denoiser) evaluations, an int32 scalar.
      converged: ``False`` only if an adaptive ODE solve ran out of ``max_iterations``.
    """

    samples: Array
    nfe: Array
    converged: Array


def default_dtype(dtype: DTypeLike | None) -> jnp.dtype:
    """``dtype``, or the default float (float32, float64 under x64) when ``None``."""
    return jnp.result_type(float) if dtype is None else jnp.dtype(dtype)


def init_state(key: PRNGKey, sde: SDE, shape: Shape, x_init: Array | None, dtype: DTypeLike | None = None) -> Array:
    """The starting point: ``x_init`` if given (checked: shape, finite), else a prior draw."""
    dtype = default_dtype(dtype)
    shape = tuple(shape)
    if x_init is None:
        return sde.prior_sample(key, shape, dtype)
    check_shape("x_init", x_init, shape)
    check_finite("x_init", x_init)
    return jnp.asarray(x_init, dtype)


def start_at_sigma(key: PRNGKey, sigma: Array, shape: Shape, x_init: Array | None, denoise_fn: DenoiseFn,
                   fn_name: str) -> Array:
    """The start of a sampler in the noise-level parameterisation (EDM, consistency models): ``x_init`` if given
    (checked: shape, finite), else ``sigma * N(0, I)`` in ``sigma``'s dtype; checks that ``denoise_fn(x, sigma)``
    returns ``x``'s shape (the error names it ``fn_name``)."""
    if x_init is None:
        x = sigma * jax.random.normal(key, tuple(shape), sigma.dtype)
    else:
        check_shape("x_init", x_init, tuple(shape))
        check_finite("x_init", x_init)
        x = jnp.asarray(x_init, sigma.dtype)
    out = jax.eval_shape(denoise_fn, x, sigma)
    if tuple(getattr(out, "shape", ())) != tuple(x.shape):
        raise ValueError(f"{fn_name} must return an array of shape {x.shape}, "
                         f"got {getattr(out, 'shape', type(out).__name__)}")
    return x


def split_key(key: PRNGKey | None, x_init: Array | None) -> Array:
    """Split ``key``; a deterministic start (``x_init`` given) may pass ``key=None``."""
    if key is None:
        if x_init is None:
            raise ValueError("key may be None only when x_init is given")
        key = jax.random.key(0)
    return jax.random.split(key)


def prepare(key: PRNGKey | None, score_fn: ScoreFn, sde: SDE, shape: Shape, x_init: Array | None,
            dtype: DTypeLike | None, num_steps: int) -> tuple[Array, Array, PRNGKey, int]:
    """Checked ``num_steps``, the start ``x``, the grid ``linspace(T, eps, num_steps + 1)`` and the steps' key.

    Returns ``(x, ts, key, num_steps)``.
    """
    num_steps = check_int_range("num_steps", num_steps, 1)
    k_init, k_steps = split_key(key, x_init)
    x = init_state(k_init, sde, shape, x_init, dtype)
    check_score_fn(score_fn, x, sde.T)
    ts = jnp.linspace(sde.T, sde.eps, num_steps + 1, dtype=x.dtype)
    return x, ts, k_steps, num_steps


def standard_normal(key: PRNGKey, like: Array) -> Array:
    """Standard normals of the shape and dtype of ``like``."""
    return jax.random.normal(key, like.shape, like.dtype)


def is_concrete_zero(value: ArrayLike) -> bool:
    """Whether ``value`` is a Python number equal to 0 (a noise scale that is known not to draw noise)."""
    return isinstance(value, int | float) and value == 0


def scan_with_noise(body: Callable, carry, key: PRNGKey, num_steps: int, draws: int, like: Array):
    """``lax.scan`` of ``carry = body(carry, i, z_i)`` for ``i = 0..num_steps-1``, ``z_i`` standard normals of
    shape ``(draws, *like.shape)`` (``None`` when ``draws == 0``).

    The noise of ``K = min(NOISE_CHUNK, num_steps)`` consecutive steps comes from one draw with
    ``fold_in(key, i // K)``: it depends only on the key and the step, so per-sample keys keep samples
    independent of the batch, while the per-step key derivation (a ``fold_in`` per sample and step, a
    threefry block for every 4 normals of an 8-D state) is amortised over ``K`` steps.
    """
    if draws == 0:
        return jax.lax.scan(lambda c, i: (body(c, i, None), None), carry, jnp.arange(num_steps))[0]
    size = min(NOISE_CHUNK, num_steps)

    def chunk(carry, c, length):
        z = jax.random.normal(jax.random.fold_in(key, c), (length, draws, *like.shape), like.dtype)
        steps = c * size + jnp.arange(length)
        return jax.lax.scan(lambda cc, iz: (body(cc, *iz), None), carry, (steps, z))[0]

    full, rest = divmod(num_steps, size)
    carry = jax.lax.scan(lambda cc, c: (chunk(cc, c, size), None), carry, jnp.arange(full))[0]
    if rest:
        carry = chunk(carry, full, rest)
    return carry


def tweedie_denoise(score_fn: ScoreFn, sde: SDE, x: Array, t: ArrayLike) -> Array:
    """``E[x_0 | x_t = x] = (x + s^2 score(x, t)) / m`` (Tweedie's formula), the optional final denoise.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbayes.sde import VPSDE, gaussian_score
      >>> sde = VPSDE()
      >>> score = gaussian_score(sde, jnp.full(2, 3.0), jnp.zeros((2, 2)))  # all data at (3, 3)
      >>> tweedie_denoise(score, sde, jnp.zeros(2), 0.5).round(4).tolist()
      [3.0, 3.0]
    """
    return (x + sde.std(t) ** 2 * score_fn(x, t)) / sde.mean_coeff(t)


def finish(score_fn: ScoreFn, sde: SDE, x: Array, t: ArrayLike, nfe, denoise: bool,
           converged=True) -> SamplerOutput:
    """The ``SamplerOutput`` of a sampler that ends at time ``t``, after Tweedie's step when ``denoise``."""
    if denoise:
        x = tweedie_denoise(score_fn, sde, x, t)
        nfe = nfe + 1
    return SamplerOutput(x, jnp.asarray(nfe, jnp.int32), jnp.asarray(converged))


__all__ = ["NOISE_CHUNK", "SamplerOutput", "default_dtype", "finish", "init_state", "is_concrete_zero", "prepare",
           "scan_with_noise", "split_key", "standard_normal", "tweedie_denoise"]
