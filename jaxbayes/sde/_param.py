"""Converters between the quantities a diffusion network can predict.

For ``x_t = m(t) x_0 + s(t) z``:

* score ``grad log p_t(x) = (m E[x_0|x] - x) / s^2 = -E[z|x] / s``;
* noise ``eps = E[z | x_t = x] = -s score``;
* data ``x0 = E[x_0 | x_t = x] = (x + s^2 score) / m`` (Tweedie);
* velocity, the probability-flow drift ``v = f(t) x - g(t)^2 score / 2``;
* the EDM denoiser ``D(y, sigma)`` works on ``y = x / m`` with ``sigma = s / m``: ``D(y, sigma) = x0``.
"""

from __future__ import annotations

from collections.abc import Callable

from jaxbayes._checks import check_choice
from jaxbayes.typing import Array, ArrayLike

KINDS = ("score", "eps", "x0", "velocity")


def to_score(value: Array, x: Array, t: ArrayLike, sde, kind: str) -> Array:
    """Convert a prediction of ``kind`` (``"score"``, ``"eps"``, ``"x0"``, ``"velocity"``) at ``(x, t)`` to a score.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbayes.sde import VESDE
      >>> round(float(to_score(jnp.array(1.0), jnp.array(0.0), 1.0, VESDE(), "eps")), 6)
      -0.02
    """
    check_choice("kind", kind, KINDS)
    m, s = sde.mean_coeff(t), sde.std(t)
    if kind == "score":
        return value
    if kind == "eps":
        return -value / s
    if kind == "x0":
        return (m * value - x) / s**2
    g2 = sde.diffusion(t) ** 2
    return 2 * (sde.drift(x, t) - value) / g2


def from_score(score: Array, x: Array, t: ArrayLike, sde, kind: str) -> Array:
    """Convert a score at ``(x, t)`` to ``kind`` (inverse of :func:`to_score`)."""
    check_choice("kind", kind, KINDS)
    m, s = sde.mean_coeff(t), sde.std(t)
    if kind == "score":
        return score
    if kind == "eps":
        return -s * score
    if kind == "x0":
        return (x + s**2 * score) / m
    return sde.drift(x, t) - 0.5 * sde.diffusion(t) ** 2 * score


def convert_fn(fn: Callable[[Array, Array], Array], sde, *, source: str, target: str = "score") -> Callable:
    """Wrap a model ``fn(x, t)`` predicting ``source`` into one predicting ``target``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbayes.sde import VPSDE
      >>> eps_fn = lambda x, t: jnp.zeros_like(x)
      >>> score_fn = convert_fn(eps_fn, VPSDE(), source="eps")
      >>> score_fn(jnp.ones(2), 0.5).tolist()
      [-0.0, -0.0]
    """
    check_choice("source", source, KINDS)
    check_choice("target", target, KINDS)

    def wrapped(x, t):
        return from_score(to_score(fn(x, t), x, t, sde, source), x, t, sde, target)

    return wrapped


def denoiser_from_score(score_fn: Callable, sde) -> Callable[[Array, Array], Array]:
    """EDM denoiser ``D(y, sigma)`` in the scaled variable ``y = x / m`` from a score of ``sde``.

    ``t = sde.t_from_sigma(sigma)``, ``x = m(t) y``, and ``D = (x + s^2 score(x, t)) / m``; any SDE model
    can then be sampled with :func:`jaxbayes.sde.edm_sampler`.
    """

    def denoise_fn(y, sigma):
        t = sde.t_from_sigma(sigma)
        m, s = sde.mean_coeff(t), sde.std(t)
        x = m * y
        return (x + s**2 * score_fn(x, t)) / m

    return denoise_fn


def score_from_denoiser(denoise_fn: Callable, sde) -> Callable[[Array, Array], Array]:
    """Score ``score(x, t)`` of ``sde`` from an EDM denoiser ``D(y, sigma)``.

    The inverse of :func:`denoiser_from_score`.
    """

    def score_fn(x, t):
        m, s = sde.mean_coeff(t), sde.std(t)
        return (m * denoise_fn(x / m, s / m) - x) / s**2

    return score_fn
