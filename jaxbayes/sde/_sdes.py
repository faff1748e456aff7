"""Forward SDEs of score-based generative models as pytrees: VE, VP and sub-VP.

Every SDE here is linear, ``dx = f(t) x dt + g(t) dW`` on ``t in [0, T]``, so its perturbation kernel is
Gaussian, ``x_t = m(t) x_0 + s(t) z`` with ``z ~ N(0, I)``. Samplers, likelihoods and losses only use
``drift``, ``diffusion``, ``mean_coeff`` (``m``), ``std`` (``s``), the prior and ``discretize``.

Reference: Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole, "Score-Based Generative Modeling through
Stochastic Differential Equations", ICLR 2021 (default hyper-parameters below are theirs).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes._checks import check_int_range, concrete_value
from jaxbayes.typing import SDE, Array, ArrayLike, PRNGKey, ScoreFn


def check_time(sde: SDE, t: ArrayLike, name: str = "t") -> None:
    """Raise ``ValueError`` if a concrete time ``t`` is outside ``[0, T]``."""
    v = concrete_value(t)
    if v is None or v.dtype == object:
        return
    if np.any(~np.isfinite(v)) or np.any(v < 0) or np.any(v > sde.T * (1 + 1e-6)):
        raise ValueError(f"{name} must be in [0, T={sde.T}] (sampling uses [eps={sde.eps}, T]), got {v}")


def _check_static(cls_name: str, T: float, eps: float, N: int) -> None:
    if not (isinstance(T, int | float) and T > 0):
        raise ValueError(f"{cls_name}: T must be a positive number, got {T!r}")
    if not (isinstance(eps, int | float) and 0 <= eps < T):
        raise ValueError(f"{cls_name}: eps must be in [0, T={T}), got {eps!r}")
    check_int_range("N", N, 1)


def _check_pos(cls_name: str, **values) -> None:
    for name, v in values.items():
        if isinstance(v, int | float) and not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{cls_name}: {name} must be finite and > 0, got {v!r}")


class _LinearSDE:
    """Methods shared by the linear SDEs (``m``, ``s``, ``f``, ``g`` are defined by subclasses)."""

    T: float
    eps: float
    N: int

    # --- to be provided: log_mean_coeff(t), std(t), drift_coeff(t), diffusion(t), prior_std ----------

    def mean_coeff(self, t: ArrayLike) -> Array:
        """``m(t)``: the mean of ``x_t`` given ``x_0`` is ``m(t) x_0``."""
        return jnp.exp(self.log_mean_coeff(t))

    def drift(self, x: Array, t: ArrayLike) -> Array:
        """Forward drift ``f(x, t) = f(t) x``."""
        check_time(self, t)
        return self.drift_coeff(t) * x

    def sigma(self, t: ArrayLike) -> Array:
        """The noise-to-signal ratio ``s(t) / m(t)``: ``x_t / m(t) = x_0 + sigma z`` (EDM's sigma)."""
        return self.std(t) / self.mean_coeff(t)

    def marginal(self, x0: Array, t: ArrayLike) -> tuple[Array, Array]:
        """Mean ``m(t) x_0`` and standard deviation ``s(t)`` of the perturbation kernel ``p_t(x | x_0)``."""
        check_time(self, t)
        return self.mean_coeff(t) * x0, self.std(t)

    def perturb(self, key: PRNGKey, x0: Array, t: ArrayLike) -> tuple[Array, Array]:
        """Draw ``x_t = m(t) x_0 + s(t) z``; returns ``(x_t, z)``."""
        z = jax.random.normal(key, jnp.shape(x0), jnp.result_type(x0))
        mean, std = self.marginal(x0, t)
        return mean + std * z, z

    def prior_sample(self, key: PRNGKey, shape: tuple[int, ...], dtype=None) -> Array:
        """A draw from the prior ``N(0, prior_std^2 I)`` that approximates ``p_T``."""
        dtype = jnp.result_type(float) if dtype is None else dtype
        return self.prior_std * jax.random.normal(key, shape, dtype)

    def prior_logp(self, z: Array) -> Array:
        """Log-density of the prior at one sample ``z`` (summed over every axis)."""
        n = z.size
        var = self.prior_std**2
        return -0.5 * n * jnp.log(2 * jnp.pi * var) - 0.5 * jnp.sum(z**2) / var

    def reverse_drift(self, score_fn: ScoreFn, x: Array, t: ArrayLike, *, ode: bool = False) -> Array:
        """Drift of the reverse-time SDE ``f - g^2 score`` or of the probability-flow ODE ``f - g^2 score / 2``.

        Time runs backwards: integrate ``dx = reverse_drift dt + g dW`` with ``dt < 0`` (the ODE without
        noise).
        """
        g2 = self.diffusion(t) ** 2
        return self.drift(x, t) - (0.5 if ode else 1.0) * g2 * score_fn(x, t)

    def discretize(self, x: Array, t: ArrayLike, dt: ArrayLike) -> tuple[Array, Array]:
        """Discrete forward step ``x_{t} = x_{t-dt} + f_i + G_i z`` used by reverse-diffusion predictors.

        The default is Euler: ``f_i = f(x, t) dt``, ``G_i = g(t) sqrt(dt)``. VE and VP override it with the
        exact transition of their perturbation kernel (SMLD and DDPM, Song et al. appendix E).
        """
        return self.drift(x, t) * dt, self.diffusion(t) * jnp.sqrt(dt)

    def t_from_sigma(self, sigma: ArrayLike) -> Array:  # pragma: no cover - overridden
        raise NotImplementedError

    def _check(self) -> None:
        _check_static(type(self).__name__, self.T, self.eps, self.N)


def _register(cls, data: list[str], meta: list[str]):
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)


@dataclasses.dataclass(frozen=True)
class VESDE(_LinearSDE):
    r"""Variance-exploding SDE ``dx = sqrt(d sigma^2(t) / dt) dW`` with ``sigma(t) = smin (smax/smin)^t``.

    ``x_t = x_0 + sigma(t) z``: ``m(t) = 1``, ``s(t) = sigma(t)``; prior ``N(0, sigma_max^2 I)``.
    The discrete form is SMLD/NCSN (Song & Ermon 2019).

    Attributes:
      sigma_min, sigma_max: noise scale range (Song et al.: 0.01 and 50 for CIFAR-10).
      T, eps: time horizon and the smallest sampling time (static).
      N: number of discrete noise levels for SMLD losses and ancestral steps (static).

    Example:
      >>> sde = VESDE(sigma_min=0.01, sigma_max=50.0)
      >>> round(float(sde.std(1.0)), 3), round(float(sde.std(0.0)), 3)
      (50.0, 0.01)
    """

    sigma_min: ArrayLike = 0.01
    sigma_max: ArrayLike = 50.0
    T: float = 1.0
    eps: float = 1e-5
    N: int = 1000

    def __post_init__(self):
        self._check()
        _check_pos("VESDE", sigma_min=self.sigma_min, sigma_max=self.sigma_max)

    def log_mean_coeff(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=float))

    def std(self, t):
        check_time(self, t)
        t = jnp.asarray(t, dtype=float)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** (t / self.T)

    def drift_coeff(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=float))

    def diffusion(self, t):
        """``g(t) = sigma(t) sqrt(2 log(smax / smin) / T)``."""
        log_ratio = jnp.log(jnp.asarray(self.sigma_max, float) / self.sigma_min)
        return self.std(t) * jnp.sqrt(2 * log_ratio / self.T)

    @property
    def prior_std(self):
        return self.sigma_max

    def discretize(self, x, t, dt):
        """SMLD step: ``f_i = 0``, ``G_i = sqrt(sigma(t)^2 - sigma(t - dt)^2)``."""
        s_t = self.std(t)
        s_prev = self.std(jnp.maximum(jnp.asarray(t, float) - dt, 0.0))
        return jnp.zeros_like(x), jnp.sqrt(jnp.maximum(s_t**2 - s_prev**2, 0.0))

    def t_from_sigma(self, sigma):
        """Inverse of :meth:`sigma` (``= std`` for VE)."""
        return self.T * jnp.log(sigma / self.sigma_min) / jnp.log(self.sigma_max / self.sigma_min)


@dataclasses.dataclass(frozen=True)
class VPSDE(_LinearSDE):
    r"""Variance-preserving SDE ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dW``, ``beta`` linear in ``t``.

    ``m(t) = exp(-t^2 (b1 - b0) / 4 - t b0 / 2)``, ``s(t) = sqrt(1 - m(t)^2)``; prior ``N(0, I)``. The
    discrete form is DDPM (Ho et al. 2020).

    Attributes:
      beta_min, beta_max: ``beta(0)`` and ``beta(T)`` (Song et al.: 0.1 and 20).
      T, eps, N: as for :class:`VESDE`.

    Example:
      >>> sde = VPSDE()
      >>> round(float(sde.mean_coeff(1.0)), 5)
      0.00657
    """

    beta_min: ArrayLike = 0.1
    beta_max: ArrayLike = 20.0
    T: float = 1.0
    eps: float = 1e-5
    N: int = 1000

    def __post_init__(self):
        self._check()
        _check_pos("VPSDE", beta_min=self.beta_min, beta_max=self.beta_max)

    def beta(self, t):
        """``beta(t) = b0 + (t / T) (b1 - b0)``."""
        return self.beta_min + jnp.asarray(t, float) / self.T * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t):
        check_time(self, t)
        t = jnp.asarray(t, dtype=float) / self.T
        return self.T * (-0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min)

    def std(self, t):
        return jnp.sqrt(-jnp.expm1(2 * self.log_mean_coeff(t)))

    def drift_coeff(self, t):
        return -0.5 * self.beta(t)

    def diffusion(self, t):
        check_time(self, t)
        return jnp.sqrt(self.beta(t))

    @property
    def prior_std(self):
        return 1.0

    def discretize(self, x, t, dt):
        """DDPM step over ``[t - dt, t]``: ``f_i = (sqrt(1 - b_i) - 1) x``, ``G_i = sqrt(b_i)``.

        Here ``1 - b_i = m(t)^2 / m(t - dt)^2``, the exact transition of the VP kernel.
        """
        t = jnp.asarray(t, float)
        log_alpha = 2 * (self.log_mean_coeff(t) - self.log_mean_coeff(jnp.maximum(t - dt, 0.0)))
        beta_i = -jnp.expm1(log_alpha)
        return (jnp.exp(0.5 * log_alpha) - 1) * x, jnp.sqrt(beta_i)

    def t_from_sigma(self, sigma):
        """Solve ``s(t) / m(t) = sigma`` for ``t`` (a quadratic in ``t``)."""
        # -2 log m = log(1 + sigma^2) = a t^2 + b t with a = (b1 - b0) / (2T), b = b0.
        c = jnp.log1p(jnp.asarray(sigma, float) ** 2)
        return _solve_quadratic(self, c)


def _solve_quadratic(sde, c):
    a = 0.5 * (sde.beta_max - sde.beta_min) / sde.T
    b = sde.beta_min
    return 2 * c / (b + jnp.sqrt(b**2 + 4 * a * c))


@dataclasses.dataclass(frozen=True)
class SubVPSDE(_LinearSDE):
    r"""Sub-VP SDE ``dx = -beta x / 2 dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta)) ) dW``.

    Same mean as VP; ``s(t) = 1 - m(t)^2``, so its variance is bounded by the VP one. Prior ``N(0, I)``.

    Example:
      >>> sde = SubVPSDE()
      >>> float(sde.std(0.0))
      0.0
    """

    beta_min: ArrayLike = 0.1
    beta_max: ArrayLike = 20.0
    T: float = 1.0
    eps: float = 1e-5
    N: int = 1000

    def __post_init__(self):
        self._check()
        _check_pos("SubVPSDE", beta_min=self.beta_min, beta_max=self.beta_max)

    beta = VPSDE.beta
    log_mean_coeff = VPSDE.log_mean_coeff
    drift_coeff = VPSDE.drift_coeff

    def std(self, t):
        return -jnp.expm1(2 * self.log_mean_coeff(t))

    def diffusion(self, t):
        check_time(self, t)
        discount = -jnp.expm1(4 * self.log_mean_coeff(t))
        return jnp.sqrt(self.beta(t) * discount)

    @property
    def prior_std(self):
        return 1.0

    def t_from_sigma(self, sigma):
        """Solve ``(1 - m^2) / m = sigma`` for ``m``, then ``t``."""
        sigma = jnp.asarray(sigma, float)
        m = (jnp.sqrt(sigma**2 + 4) - sigma) / 2
        return _solve_quadratic(self, -2 * jnp.log(m))


_register(VESDE, ["sigma_min", "sigma_max"], ["T", "eps", "N"])
_register(VPSDE, ["beta_min", "beta_max"], ["T", "eps", "N"])
_register(SubVPSDE, ["beta_min", "beta_max"], ["T", "eps", "N"])


def get_sde(name: str, **kwargs) -> SDE:
    """Build an SDE by name: ``"ve"``, ``"vp"`` or ``"subvp"`` (keyword arguments go to its constructor).

    Example:
      >>> get_sde("vp", beta_max=10.0).beta_max
      10.0
    """
    table = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE}
    if name not in table:
        raise ValueError(f"sde name must be one of {sorted(table)}, got {name!r}")
    return table[name](**kwargs)


def check_score_fn(score_fn: ScoreFn, x: Array, t: ArrayLike, name: str = "score_fn") -> None:
    """Raise ``ValueError`` at trace time if ``score_fn(x, t)`` does not return an array shaped like ``x``."""
    try:
        out = jax.eval_shape(score_fn, x, jnp.asarray(t, dtype=jnp.result_type(x)))
    except (TypeError, ValueError) as err:  # e.g. a sample shape the score's parameters do not broadcast with
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{name}(x, t) fails on x of shape {tuple(jnp.shape(x))} (the sample shape): "
                         f"{first}") from err
    if not hasattr(out, "shape") or tuple(out.shape) != tuple(jnp.shape(x)):
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"{name}(x, t) must return an array of the shape of x {tuple(jnp.shape(x))}, got {got}")
