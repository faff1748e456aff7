"""DDIM (Song, Meng & Ermon, "Denoising Diffusion Implicit Models", ICLR 2021) for any linear SDE."""

from __future__ import annotations

import jax.numpy as jnp

from jaxbayes._checks import check_int_range, check_positive
from jaxbayes.sde._sampling import SamplerOutput, init_state, is_concrete_zero, scan_with_noise, split_key
from jaxbayes.sde._sdes import check_score_fn
from jaxbayes.typing import SDE, Array, ArrayLike, DTypeLike, PRNGKey, ScoreFn, Shape


def ddim_sampler(key: PRNGKey, score_fn: ScoreFn, sde: SDE, shape: Shape, *, num_steps: int = 50,
                 eta: ArrayLike = 0.0, x_init: Array | None = None, dtype: DTypeLike | None = None) -> SamplerOutput:
    r"""DDIM (Song, Meng & Ermon 2021), written for any linear SDE ``x_t = m x_0 + s z``.

    On ``t_0 = T > ... > t_{K-1} = eps`` and a final target ``(m, s) = (1, 0)``, each step predicts
    ``x0 = (x + s_t^2 score) / m_t`` and ``eps = -s_t score`` and moves to
    ``x_s = m_s x0 + sqrt(s_s^2 - c^2) eps + c z`` with ``c = eta (s_s / s_t) sqrt(s_t^2 - (m_t s_s / m_s)^2)``.
    ``eta = 0`` is the deterministic DDIM; ``eta = 1`` is DDPM's ancestral sampler. For data that is a single
    point, one step returns it exactly. ``nfe = num_steps``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.sde import VPSDE, gaussian_score
      >>> sde = VPSDE()
      >>> score = gaussian_score(sde, jnp.full(2, 3.0), jnp.zeros((2, 2)))  # all data at (3, 3)
      >>> ddim_sampler(jax.random.key(0), score, sde, (2,), num_steps=1).samples.round(4).tolist()
      [3.0, 3.0]
    """
    check_positive("eta", eta, strict=False)
    num_steps = check_int_range("num_steps", num_steps, 1)
    k_init, key = split_key(key, x_init)
    x = init_state(k_init, sde, shape, x_init, dtype)
    check_score_fn(score_fn, x, sde.T)
    ts = jnp.linspace(sde.T, sde.eps, num_steps, dtype=x.dtype)
    m, s = sde.mean_coeff(ts), sde.std(ts)
    m_next = jnp.concatenate([m[1:], jnp.ones(1, m.dtype)])
    s_next = jnp.concatenate([s[1:], jnp.zeros(1, s.dtype)])

    # A concrete eta = 0 is the deterministic sampler: no noise is drawn at all.
    stochastic = not is_concrete_zero(eta)

    def body(x, i, z):
        score = score_fn(x, ts[i])
        x0 = (x + s[i] ** 2 * score) / m[i]
        eps = -s[i] * score
        c = eta * s_next[i] / s[i] * jnp.sqrt(jnp.maximum(s[i] ** 2 - (m[i] * s_next[i] / m_next[i]) ** 2, 0.0))
        x = m_next[i] * x0 + jnp.sqrt(jnp.maximum(s_next[i] ** 2 - c**2, 0.0)) * eps
        return x + c * z[0] if stochastic else x

    x = scan_with_noise(body, x, key, num_steps, int(stochastic), x)
    return SamplerOutput(x, jnp.asarray(num_steps, jnp.int32), jnp.asarray(True))


__all__ = ["ddim_sampler"]
