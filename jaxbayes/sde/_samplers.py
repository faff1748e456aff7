"""Samplers for score-based SDEs: predictor-corrector, probability-flow ODE, DDIM and DPM-Solver++(2M).

Every sampler draws **one** sample from one key, ``sampler(key, score_fn, sde, shape, ...)``, with
``score_fn(x, t)`` the score of a single point; batch with ``jax.vmap`` over
``jaxbayes.parallel.sample_keys`` (or :func:`sample_batch`), so a sample never depends on the batch size
or the device count. Each returns ``SamplerOutput(samples, nfe, converged)`` where ``nfe`` counts score
evaluations. Time runs from ``sde.T`` down to ``sde.eps``; the random numbers of steps ``c K .. c K + K - 1``
come from one draw with ``fold_in(key, c)`` (``K = NOISE_CHUNK`` steps per draw, see :func:`scan_with_noise`).

References: Song et al., "Score-Based Generative Modeling through SDEs" (ICLR 2021) for the predictors,
correctors and the probability-flow ODE; Song, Meng, Ermon, "Denoising Diffusion Implicit Models"
(ICLR 2021); Lu et al., "DPM-Solver++" (2022).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_choice, check_finite, check_int_range, check_positive, check_shape
from jaxbayes.parallel import data_parallel, sample_keys
from jaxbayes.sde._ode import SOLVERS, integrate
from jaxbayes.sde._sdes import VESDE, SubVPSDE, check_score_fn
from jaxbayes.typing import Array, ArrayLike, PRNGKey

PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral", "none")
NOISE_CHUNK = 16
CORRECTORS = ("langevin", "annealed_langevin", "none")


class SamplerOutput(NamedTuple):
    """Result of a sampler.

    Attributes:
      samples: the sample (shape ``shape``; a leading batch axis when vmapped).
      nfe: number of score (or denoiser) evaluations, an int32 scalar.
      converged: ``False`` only if an adaptive ODE solve ran out of ``max_steps``.
    """

    samples: Array
    nfe: Array
    converged: Array


def _dtype(dtype):
    return jnp.result_type(float) if dtype is None else jnp.dtype(dtype)


def init_state(key: PRNGKey, sde, shape: tuple[int, ...], x_init: Array | None, dtype=None) -> Array:
    """The starting point: ``x_init`` if given (checked: shape, finite), else a prior draw."""
    dtype = _dtype(dtype)
    shape = tuple(shape)
    if x_init is None:
        return sde.prior_sample(key, shape, dtype)
    check_shape("x_init", x_init, shape)
    check_finite("x_init", x_init)
    return jnp.asarray(x_init, dtype)


def split_key(key, x_init):
    """Split ``key``; a deterministic start (``x_init`` given) may pass ``key=None``."""
    if key is None:
        if x_init is None:
            raise ValueError("key may be None only when x_init is given")
        key = jax.random.key(0)
    return jax.random.split(key)


def _prepare(key, score_fn, sde, shape, x_init, dtype, num_steps):
    num_steps = check_int_range("num_steps", num_steps, 1)
    k_init, k_steps = split_key(key, x_init)
    x = init_state(k_init, sde, shape, x_init, dtype)
    check_score_fn(score_fn, x, sde.T)
    ts = jnp.linspace(sde.T, sde.eps, num_steps + 1, dtype=x.dtype)
    return x, ts, k_steps, num_steps


def _noise(key, x):
    return jax.random.normal(key, x.shape, x.dtype)


def is_concrete_zero(value) -> bool:
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


def _predictor(name, sde, score_fn, x, t, dt, z):
    """One reverse step from ``t`` to ``t + dt`` (``dt < 0``) with noise ``z``; returns ``(x, x_mean)``."""
    if name == "none":
        return x, x
    if name == "euler_maruyama":
        mean = x + sde.reverse_drift(score_fn, x, t) * dt
        return mean + sde.diffusion(t) * jnp.sqrt(-dt) * z, mean
    if name == "reverse_diffusion":
        f, g = sde.discretize(x, t, -dt)
        mean = x - f + g**2 * score_fn(x, t)
        return mean + g * z, mean
    # ancestral sampling (SMLD for VE, DDPM for VP)
    score = score_fn(x, t)
    if isinstance(sde, VESDE):
        s_t, s_prev = sde.std(t), sde.std(t + dt)
        mean = x + (s_t**2 - s_prev**2) * score
        std = jnp.sqrt(s_prev**2 * (s_t**2 - s_prev**2) / s_t**2)
        return mean + std * z, mean
    beta = -jnp.expm1(2 * (sde.log_mean_coeff(t) - sde.log_mean_coeff(t + dt)))
    mean = (x + beta * score) / jnp.sqrt(1 - beta)
    return mean + jnp.sqrt(beta) * z, mean


def _corrector(name, sde, score_fn, x, t, snr, z):
    """One Langevin step at time ``t`` with noise ``z`` (Song et al. Algorithms 4/5); returns ``(x, x_mean)``."""
    alpha = 1.0 if isinstance(sde, VESDE) else 1 - sde.beta(t) / sde.N
    grad = score_fn(x, t)
    if name == "langevin":
        grad_norm = jnp.linalg.norm(grad.ravel())
        noise_norm = jnp.linalg.norm(z.ravel())
        step = 2 * alpha * (snr * noise_norm / jnp.where(grad_norm > 0, grad_norm, 1.0)) ** 2
    else:  # annealed Langevin dynamics (NCSN)
        step = 2 * alpha * (snr * sde.std(t)) ** 2
    mean = x + step * grad
    return mean + jnp.sqrt(2 * step) * z, mean


def tweedie_denoise(score_fn: Callable, sde, x: Array, t: ArrayLike) -> Array:
    """``E[x_0 | x_t = x] = (x + s^2 score(x, t)) / m`` (Tweedie's formula), the optional final denoise."""
    return (x + sde.std(t) ** 2 * score_fn(x, t)) / sde.mean_coeff(t)


def pc_sampler(key: PRNGKey, score_fn: Callable, sde, shape: tuple[int, ...], *,
               predictor: str = "reverse_diffusion", corrector: str = "langevin", snr: ArrayLike = 0.16,
               n_corrector: int = 1, num_steps: int | None = None, denoise: bool = True,
               x_init: Array | None = None, dtype=None) -> SamplerOutput:
    r"""Predictor-corrector sampling of the reverse-time SDE (Song et al. 2021, Algorithm 1).

    For ``i = 0..num_steps-1`` on the grid ``t_i = linspace(T, eps)``: ``n_corrector`` Langevin corrector
    steps at ``t_i``, then one predictor step ``t_i -> t_{i+1}``.

    Predictors: ``"euler_maruyama"`` (``x += [f - g^2 s] dt + g sqrt(|dt|) z``), ``"reverse_diffusion"``
    (the discretisation of the forward SDE, run backwards), ``"ancestral"`` (SMLD/DDPM, VE and VP only),
    ``"none"``. Correctors: ``"langevin"`` (step from the signal-to-noise ratio ``snr``),
    ``"annealed_langevin"`` (step ``2 (snr s(t))^2``), ``"none"``.

    Args:
      key: one PRNG key (one sample).
      score_fn: ``score_fn(x, t)`` for one point ``x`` of shape ``shape`` and a scalar time.
      sde: a :class:`VESDE`, :class:`VPSDE` or :class:`SubVPSDE`.
      shape: the shape of one sample.
      predictor, corrector: names above. snr: corrector signal-to-noise ratio.
      n_corrector: corrector steps per noise level. num_steps: predictor steps (default ``sde.N``).
      denoise: end with Tweedie's denoising step at ``eps`` (one more evaluation).
      x_init: starting point instead of a prior draw (must be finite).
      dtype: state dtype (default float32, float64 under x64).

    Returns:
      ``SamplerOutput``; ``nfe = num_steps * (predictor + n_corrector) + denoise``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.sde import VPSDE, gaussian_score
      >>> sde = VPSDE()
      >>> out = pc_sampler(jax.random.key(0), gaussian_score(sde, jnp.zeros(2), jnp.eye(2)), sde, (2,),
      ...                  num_steps=10)
      >>> out.samples.shape, int(out.nfe)
      ((2,), 21)
    """
    check_choice("predictor", predictor, PREDICTORS)
    check_choice("corrector", corrector, CORRECTORS)
    if predictor == "ancestral" and isinstance(sde, SubVPSDE):
        raise ValueError("predictor='ancestral' is defined for VESDE and VPSDE, not SubVPSDE")
    n_corrector = check_int_range("n_corrector", n_corrector, 0)
    check_positive("snr", snr)
    x, ts, key, num_steps = _prepare(key, score_fn, sde, shape, x_init, dtype, sde.N if num_steps is None
                                     else num_steps)
    n_corr = 0 if corrector == "none" else n_corrector

    n_pred = int(predictor != "none")

    def body(x, i, z):
        t, t_next = ts[i], ts[i + 1]
        for j in range(n_corr):
            x, _ = _corrector(corrector, sde, score_fn, x, t, snr, z[j])
        if n_pred:
            x, _ = _predictor(predictor, sde, score_fn, x, t, t_next - t, z[n_corr])
        return x

    x = scan_with_noise(body, x, key, num_steps, n_corr + n_pred, x)
    nfe = num_steps * (n_pred + n_corr)
    if denoise:
        x = tweedie_denoise(score_fn, sde, x, ts[-1])
        nfe += 1
    return SamplerOutput(x, jnp.asarray(nfe, jnp.int32), jnp.asarray(True))


def ode_sampler(key: PRNGKey, score_fn: Callable, sde, shape: tuple[int, ...], *, solver: str = "rk4",
                num_steps: int = 100, rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = 4096,
                denoise: bool = False, x_init: Array | None = None, dtype=None) -> SamplerOutput:
    r"""Sample by integrating the probability-flow ODE ``dx/dt = f(x, t) - g(t)^2 score(x, t) / 2`` from T to eps.

    The ODE has the same marginals as the SDE, is deterministic given ``x_T`` and is what the exact
    likelihood uses (Song et al. 2021, section 4.3).

    Args:
      solver: ``"euler"``, ``"heun"``, ``"rk4"`` (``num_steps`` uniform steps) or ``"tsit5"``, ``"dopri5"``
        (diffrax, adaptive with ``PIDController(rtol, atol)``, at most ``max_steps`` steps).
      denoise: end with Tweedie's denoising step. Other arguments as :func:`pc_sampler`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.sde import VESDE, gaussian_score
      >>> sde = VESDE(sigma_max=10.0)
      >>> out = ode_sampler(jax.random.key(0), gaussian_score(sde, jnp.zeros(1), jnp.eye(1)), sde, (1,),
      ...                   solver="heun", num_steps=8)
      >>> int(out.nfe)
      16
    """
    check_choice("solver", solver, SOLVERS)
    x, _, _, num_steps = _prepare(key, score_fn, sde, shape, x_init, dtype, num_steps)

    def vf(y, t):
        return sde.reverse_drift(score_fn, y, t, ode=True)

    x, nfe, ok = integrate(vf, x, sde.T, sde.eps, solver=solver, num_steps=num_steps, rtol=rtol, atol=atol,
                           max_steps=max_steps)
    if denoise:
        x = tweedie_denoise(score_fn, sde, x, sde.eps)
        nfe = nfe + 1
    return SamplerOutput(x, nfe, ok)


def _coeffs(sde, t):
    return sde.mean_coeff(t), sde.std(t)


def ddim_sampler(key: PRNGKey, score_fn: Callable, sde, shape: tuple[int, ...], *, num_steps: int = 50,
                 eta: ArrayLike = 0.0, x_init: Array | None = None, dtype=None) -> SamplerOutput:
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
    m, s = _coeffs(sde, ts)
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


def logsnr_grid(sde, num_steps: int, dtype=None) -> Array:
    """``num_steps + 1`` times from ``T`` to ``eps``, uniform in ``lambda = log(m / s)``."""
    dtype = _dtype(dtype)
    lam = lambda t: jnp.log(sde.mean_coeff(t) / sde.std(t))
    lams = jnp.linspace(lam(jnp.asarray(sde.T, dtype)), lam(jnp.asarray(sde.eps, dtype)), num_steps + 1)
    ts = sde.t_from_sigma(jnp.exp(-lams)).astype(dtype)
    return ts.at[0].set(sde.T).at[-1].set(sde.eps)


def dpm_solver_pp_2m(key: PRNGKey, score_fn: Callable, sde, shape: tuple[int, ...], *, num_steps: int = 20,
                     grid: str = "logsnr", denoise: bool = False, x_init: Array | None = None,
                     dtype=None) -> SamplerOutput:
    r"""DPM-Solver++(2M), the second-order multistep solver of the probability-flow ODE in data prediction.

    With ``lambda = log(m / s)``, ``h_i = lambda_{i+1} - lambda_i`` and ``x0_i = (x_i + s_i^2 score) / m_i``:
    ``x_{i+1} = (s_{i+1}/s_i) x_i - m_{i+1} expm1(-h_i) D_i``, ``D_i = (1 + 1/(2 r)) x0_i - x0_{i-1}/(2 r)``,
    ``r = h_{i-1} / h_i`` (first order on the first step, and on the last when ``num_steps < 15``).
    Lu, Zhou, Bao, Chen, Li, Zhu, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
    Models" (2022), Algorithm 2.

    Args:
      grid: ``"logsnr"`` (uniform in ``lambda``, the paper's choice) or ``"time"`` (uniform in ``t``).
      denoise: end with Tweedie's step at ``eps``. ``nfe = num_steps + denoise``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.sde import VPSDE, gaussian_score
      >>> sde = VPSDE()
      >>> out = dpm_solver_pp_2m(jax.random.key(0), gaussian_score(sde, jnp.zeros(2), jnp.eye(2)), sde, (2,),
      ...                        num_steps=10)
      >>> int(out.nfe)
      10
    """
    check_choice("grid", grid, ("logsnr", "time"))
    num_steps = check_int_range("num_steps", num_steps, 1)
    k_init, _ = split_key(key, x_init)
    x = init_state(k_init, sde, shape, x_init, dtype)
    check_score_fn(score_fn, x, sde.T)
    if grid == "logsnr":
        ts = logsnr_grid(sde, num_steps, x.dtype)
    else:
        ts = jnp.linspace(sde.T, sde.eps, num_steps + 1, dtype=x.dtype)
    m, s = _coeffs(sde, ts)
    lam = jnp.log(m) - jnp.log(s)
    h = jnp.diff(lam)
    lower_final = num_steps < 15

    def body(carry, i):
        x, x0_prev, h_prev = carry
        x0 = tweedie_denoise(score_fn, sde, x, ts[i])
        r = h_prev / h[i]
        d2 = (1 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
        first = (i == 0) | (lower_final & (i == num_steps - 1))
        d = jnp.where(first, x0, d2)
        x = (s[i + 1] / s[i]) * x - m[i + 1] * jnp.expm1(-h[i]) * d
        return (x, x0, h[i]), None

    (x, _, _), _ = jax.lax.scan(body, (x, x, h[0]), jnp.arange(num_steps))
    nfe = num_steps
    if denoise:
        x = tweedie_denoise(score_fn, sde, x, sde.eps)
        nfe += 1
    return SamplerOutput(x, jnp.asarray(nfe, jnp.int32), jnp.asarray(True))


def sample_batch(sampler: Callable[[PRNGKey], SamplerOutput], key: PRNGKey, num_samples: int, *,
                 mesh=None, start: int = 0) -> SamplerOutput:
    """Draw ``num_samples`` samples with per-sample keys ``fold_in(key, start + i)``.

    ``sampler(key)`` draws one sample (e.g. ``lambda k: pc_sampler(k, score_fn, sde, shape)``). With a
    ``mesh`` the batch is split over its devices (``jaxbayes.parallel.data_parallel``); the samples are the
    same for any batch split and device count.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.sde import VPSDE, gaussian_score
      >>> sde = VPSDE()
      >>> score = gaussian_score(sde, jnp.zeros(2), jnp.eye(2))
      >>> out = sample_batch(lambda k: ddim_sampler(k, score, sde, (2,), num_steps=5), jax.random.key(0), 4)
      >>> out.samples.shape
      (4, 2)
    """
    keys = sample_keys(key, num_samples, start=start)
    if mesh is None:
        return jax.vmap(sampler)(keys)
    return data_parallel(sampler, mesh)(keys)


__all__ = [
    "SamplerOutput",
    "ddim_sampler",
    "dpm_solver_pp_2m",
    "init_state",
    "logsnr_grid",
    "ode_sampler",
    "pc_sampler",
    "sample_batch",
    "tweedie_denoise",
]
