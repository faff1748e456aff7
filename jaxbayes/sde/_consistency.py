r"""Consistency models: the EDM consistency parameterisation, consistency training (iCT) and multistep sampling.

A consistency function maps every point of a probability-flow ODE trajectory of ``x_sigma = x_0 + sigma z``
to the trajectory's end at ``sigma_min``: ``f(x_sigma, sigma) = x_{sigma_min}``, so one evaluation at
``sigma_max`` turns noise into a sample. It is learnt without a teacher by asking two adjacent noise levels
of the same ``x_0 + sigma z`` to agree:

.. math:: L = E\, \lambda(\sigma_i)\, d\big(f_\theta(x_0 + \sigma_{i+1} z, \sigma_{i+1}),
          \mathrm{sg}[f_\theta](x_0 + \sigma_i z, \sigma_i)\big)

References: Song, Dhariwal, Chen, Sutskever, "Consistency Models", ICML 2023 (the parameterisation, eq. 5 and
appendix C; multistep sampling, Algorithm 1; consistency training, Algorithm 3). Song & Dhariwal, "Improved
Techniques for Training Consistency Models", ICLR 2024 (iCT: the stop-gradient target is the current
parameters, no EMA teacher; pseudo-Huber ``d``; lognormal levels; the doubling curriculum;
``lambda = 1 / (sigma_{i+1} - sigma_i)``). Dao, Doan, Liu, Le, Metaxas, "Improved Training Technique for
Latent Consistency Models", ICLR 2025 (the Cauchy ``d``, robust to impulsive outliers).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import ndtr

from jaxbayes._checks import (
    check_choice,
    check_int_range,
    check_ndim,
    check_positive,
    concrete_value,
)
from jaxbayes.base import NAN_POLICIES, Algorithm
from jaxbayes.parallel import shard_rows_like
from jaxbayes.sde._edm import edm_precond, karras_sigmas
from jaxbayes.sde._sampling import SamplerOutput, default_dtype, scan_with_noise, split_key, start_at_sigma
from jaxbayes.sde._trainer import TrainState, trainer_init, trainer_step
from jaxbayes.typing import Array, ArrayLike, DenoiseFn, DTypeLike, PRNGKey, PyTree, Shape

DISTANCES = ("pseudo_huber", "cauchy", "l2")


def consistency_fn(model_fn: Callable[[Array, Array], Array], *, sigma_min: ArrayLike = 0.002,
                   sigma_data: ArrayLike = 0.5) -> DenoiseFn:
    r"""Wrap a raw network ``F(x_in, c_noise)`` into the consistency function ``f(x, sigma)``.

    .. math:: f(x, \sigma) = c_\mathrm{skip}(\sigma)\, x
       + c_\mathrm{out}(\sigma)\, F(c_\mathrm{in} x, c_\mathrm{noise}),
       \quad c_\mathrm{skip} = \frac{\sigma_d^2}{(\sigma - \sigma_\min)^2 + \sigma_d^2},
       \quad c_\mathrm{out} = \frac{(\sigma - \sigma_\min)\, \sigma_d}{\sqrt{\sigma_d^2 + \sigma^2}}

    with EDM's ``c_in = 1 / sqrt(sigma^2 + sd^2)`` and ``c_noise = log(sigma) / 4``
    (:func:`edm_precond`). At ``sigma = sigma_min`` ``c_skip = 1`` and ``c_out = 0`` exactly, so
    ``f(x, sigma_min) = x`` (the boundary condition) for any finite network output.

    Example:
      >>> import jax.numpy as jnp
      >>> f = consistency_fn(lambda x, c: 100.0 + x, sigma_min=0.002)
      >>> f(jnp.array([1.0, -2.0]), 0.002).tolist()
      [1.0, -2.0]
    """
    check_positive("sigma_min", sigma_min)
    check_positive("sigma_data", sigma_data)

    def f(x, sigma):
        c = edm_precond(sigma, sigma_data)
        offset = sigma - sigma_min
        c_skip = sigma_data**2 / (offset**2 + sigma_data**2)
        c_out = offset * sigma_data / jnp.sqrt(sigma_data**2 + sigma**2)
        return c_skip * x + c_out * model_fn(c.c_in * x, c.c_noise)

    return f


@dataclasses.dataclass(frozen=True)
class ConsistencySchedule:
    r"""iCT's noise levels: the doubling discretisation curriculum and lognormal level sampling.

    At training step ``k`` of ``K = total_steps`` the levels are the ``N(k)`` Karras levels
    ``sigma_min = sigma_1 < ... < sigma_N = sigma_max`` (:func:`karras_sigmas`, reversed) with

    .. math:: N(k) = \min(s_0\, 2^{\lfloor k / K' \rfloor}, s_1) + 1, \qquad
              K' = \lfloor K / (\lfloor \log_2 \lfloor s_1 / s_0 \rfloor \rfloor + 1) \rfloor,

    and the pair ``(sigma_i, sigma_{i+1})`` is drawn with
    ``p(i) ∝ Phi((log sigma_{i+1} - P_mean) / P_std) - Phi((log sigma_i - P_mean) / P_std)``, the lognormal
    ``N(P_mean, P_std^2)`` mass of the interval. ``s0 = s1`` is a fixed discretisation (the original CT
    with fixed ``N``). Song & Dhariwal 2024, section 3.

    Attributes:
      total_steps: ``K``, the planned number of training steps (static).
      s0, s1: initial and final number of intervals (static ints, ``1 <= s0 <= s1``).
      sigma_min, sigma_max, rho: the Karras levels' range and exponent.
      p_mean, p_std: the lognormal of ``log sigma``.

    Example:
      >>> sched = ConsistencySchedule(total_steps=800)
      >>> [int(sched.num_scales(k)) for k in (0, 99, 100, 799)]
      [11, 11, 21, 1281]
    """

    total_steps: int
    s0: int = 10
    s1: int = 1280
    sigma_min: ArrayLike = 0.002
    sigma_max: ArrayLike = 80.0
    rho: ArrayLike = 7.0
    p_mean: ArrayLike = -1.1
    p_std: ArrayLike = 2.0

    def __post_init__(self):
        check_int_range("total_steps", self.total_steps, 1)
        check_int_range("s0", self.s0, 1)
        check_int_range("s1", self.s1, self.s0)
        check_positive("sigma_min", self.sigma_min)
        check_positive("sigma_max", self.sigma_max)
        check_positive("rho", self.rho)
        check_positive("p_std", self.p_std)
        lo, hi = concrete_value(self.sigma_min), concrete_value(self.sigma_max)
        if lo is not None and hi is not None and not np.all(lo < hi):
            raise ValueError(f"sigma_min must be < sigma_max, got {self.sigma_min} and {self.sigma_max}")

    @property
    def num_stages(self) -> int:
        """Number of distinct discretisations: ``ceil(log2(s1 / s0)) + 1``."""
        return math.ceil(math.log2(self.s1 / self.s0) - 1e-12) + 1

    def stage(self, step: ArrayLike) -> Array:
        """The curriculum stage ``min(floor(k / K'), num_stages - 1)`` of step ``k`` (int32)."""
        period = max(self.total_steps // (math.floor(math.log2(self.s1 // self.s0)) + 1), 1)
        return jnp.minimum(jnp.asarray(step, jnp.int32) // period, self.num_stages - 1)

    def num_scales(self, step: ArrayLike) -> Array:
        """``N(k)``, the number of noise levels at training step ``k`` (int32)."""
        return jnp.minimum(self.s0 * 2 ** self.stage(step), self.s1) + 1

    def levels(self, dtype: DTypeLike | None = None) -> Array:
        """The increasing Karras levels of every stage, ``(num_stages, s1 + 1)``, padded with ``sigma_max``."""
        rows = []
        for j in range(self.num_stages):
            n = min(self.s0 * 2**j, self.s1) + 1
            up = karras_sigmas(n, sigma_min=self.sigma_min, sigma_max=self.sigma_max, rho=self.rho,
                               dtype=dtype)[-2::-1]  # drop the trailing 0, make increasing
            rows.append(jnp.concatenate([up, jnp.full(self.s1 + 1 - n, up[-1])]))
        return jnp.stack(rows)

    def sample_pairs(self, key: PRNGKey, step: ArrayLike, num: int,
                     dtype: DTypeLike | None = None) -> tuple[Array, Array]:
        """``num`` independent adjacent pairs ``(sigma_i, sigma_{i+1})`` of step ``step``'s levels."""
        sigmas = self.levels(dtype)[self.stage(step)]
        u = (jnp.log(sigmas) - self.p_mean) / self.p_std
        mass = ndtr(u[1:]) - ndtr(u[:-1])
        last = self.num_scales(step) - 2
        cdf = jnp.cumsum(jnp.where(jnp.arange(self.s1) <= last, mass, 0.0))
        # inverse-CDF draw, O(s1 + num log s1); a categorical draw costs num * s1 and dominated the step
        u = jax.random.uniform(key, (num,), cdf.dtype) * cdf[-1]
        i = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), last)
        return sigmas[i], sigmas[i + 1]


jax.tree_util.register_dataclass(ConsistencySchedule,
                                 data_fields=["sigma_min", "sigma_max", "rho", "p_mean", "p_std"],
                                 meta_fields=["total_steps", "s0", "s1"])


def default_huber_c(dim: int) -> float:
    """iCT's pseudo-Huber constant ``c = 0.00054 sqrt(d)`` for ``d`` data dimensions (0.03 for CIFAR-10)."""
    return 0.00054 * math.sqrt(dim)


def consistency_distance(x: Array, y: Array, *, distance: str = "pseudo_huber", c: ArrayLike | None = None) -> Array:
    r"""The distance ``d(x, y)`` between two predictions of one sample.

    * ``"pseudo_huber"`` (iCT): ``sqrt(||x - y||^2 + c^2) - c``;
    * ``"cauchy"`` (Dao et al. 2025): ``log(1 + ||x - y||^2 / (2 c^2))``;
    * ``"l2"`` (the original CT): ``||x - y||^2``.

    ``c`` defaults to :func:`default_huber_c` of ``x.size``.

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(consistency_distance(jnp.array([3.0]), jnp.array([-1.0]), c=3.0)), 6)
      2.0
    """
    check_choice("distance", distance, DISTANCES)
    c = default_huber_c(jnp.size(x)) if c is None else c
    check_positive("c", c)
    sq = jnp.sum((x - y) ** 2)
    if distance == "pseudo_huber":
        return jnp.sqrt(sq + c**2) - c
    if distance == "cauchy":
        return jnp.log1p(sq / (2 * c**2))
    return sq


def consistency_loss(key: PRNGKey, f: DenoiseFn, x0: Array, *, schedule: ConsistencySchedule, step: ArrayLike,
                     target_fn: DenoiseFn | None = None, distance: str = "pseudo_huber",
                     c: ArrayLike | None = None) -> Array:
    r"""The consistency-training loss of a batch ``x0 (B, ...)``, averaged over the batch.

    Per example: a pair ``sigma_i < sigma_{i+1}`` from ``schedule.sample_pairs(step)``, one ``z ~ N(0, I)``
    shared by both levels, and
    ``d(f(x0 + sigma_{i+1} z, sigma_{i+1}), sg[target_fn(x0 + sigma_i z, sigma_i)]) / (sigma_{i+1} - sigma_i)``.
    ``target_fn=None`` is iCT's target, ``f`` itself under ``stop_gradient`` (pass an EMA network's
    consistency function for the original CT's teacher). The value is not a fit measure: a constant ``f`` scores
    zero; the boundary condition ``f(x, sigma_min) = x`` is what rules such collapse out.

    Args:
      key: PRNG key of the levels and the noise.
      f: the consistency function ``f(x, sigma)`` of one sample (e.g. :func:`consistency_fn` of the net).
      x0: a batch of data ``(B, ...)``.
      schedule: the :class:`ConsistencySchedule`.
      step: the training step ``k`` (picks the discretisation ``N(k)``).
      target_fn: the target network's consistency function; ``None`` for ``f``.
      distance, c: see :func:`consistency_distance`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x0 = jax.random.normal(jax.random.key(0), (1024, 2))
      >>> sched = ConsistencySchedule(total_steps=100)
      >>> loss = consistency_loss(jax.random.key(1), lambda x, sigma: x, x0, schedule=sched, step=0)
      >>> bool(abs(loss - 1.2533) < 0.1)  # f(x, sigma) = x: the weighted distance is ||z||, E = sqrt(pi / 2)
      True
    """
    check_choice("distance", distance, DISTANCES)
    x0 = jnp.asarray(x0)
    if x0.ndim < 2 or x0.shape[0] == 0:
        raise ValueError(f"x0 must be a non-empty batch of shape (B, ...) with ndim >= 2, got shape {x0.shape}")
    target_fn = f if target_fn is None else target_fn
    k_sigma, k_z = jax.random.split(key)
    lo, hi = schedule.sample_pairs(k_sigma, step, x0.shape[0], x0.dtype)
    z = jax.random.normal(k_z, x0.shape, x0.dtype)

    def one(x, zi, s_lo, s_hi):
        target = jax.lax.stop_gradient(target_fn(x + s_lo * zi, s_lo))
        return consistency_distance(f(x + s_hi * zi, s_hi), target, distance=distance, c=c) / (s_hi - s_lo)

    return jnp.mean(jax.vmap(one)(*shard_rows_like((x0, z, lo, hi), x0)))


class ConsistencyInfo(NamedTuple):
    """Per-step diagnostics of :func:`consistency_trainer`.

    Attributes:
      loss: the loss at the parameters before the update.
      grad_norm: the gradient's global norm.
      finite: whether the gradient was finite (the update was applied when it was).
      num_scales: the step's number of noise levels ``N(k)``.
    """

    loss: Array
    grad_norm: Array
    finite: Array
    num_scales: Array


def consistency_step(apply_fn: Callable[[PyTree, Array, Array], Array], optimizer: optax.GradientTransformation,
                     schedule: ConsistencySchedule, key: PRNGKey, state: TrainState, batch: Array, *,
                     sigma_data: ArrayLike = 0.5, distance: str = "pseudo_huber", c: ArrayLike | None = None,
                     ema_decay: ArrayLike = 0.999, nan_policy: str = "skip") -> tuple[TrainState, ConsistencyInfo]:
    """One guarded optimiser step on :func:`consistency_loss` at ``state.step``, then the EMA update."""

    def loss_fn(params, k, b):
        f = consistency_fn(functools.partial(apply_fn, params), sigma_min=schedule.sigma_min,
                           sigma_data=sigma_data)
        return consistency_loss(k, f, b, schedule=schedule, step=state.step, distance=distance, c=c)

    new, info = trainer_step(loss_fn, optimizer, ema_decay, key, state, batch, nan_policy=nan_policy)
    return new, ConsistencyInfo(info.loss, info.grad_norm, info.finite, schedule.num_scales(state.step))


def consistency_trainer(apply_fn: Callable[[PyTree, Array, Array], Array], optimizer: optax.GradientTransformation,
                        schedule: ConsistencySchedule, *, sigma_data: ArrayLike = 0.5,
                        distance: str = "pseudo_huber", c: ArrayLike | None = None, ema_decay: ArrayLike = 0.999,
                        nan_policy: str = "skip") -> Algorithm:
    """Consistency training (no teacher) with the iCT recipe, as an :class:`jaxbayes.base.Algorithm`.

    The model is ``f = consistency_fn(lambda x, c: apply_fn(params, x, c), sigma_min=schedule.sigma_min,
    sigma_data=sigma_data)``; each step minimises :func:`consistency_loss` at the step's discretisation
    ``N(k)`` with the target ``stop_gradient(f)`` at the current parameters (iCT), skips non-finite updates
    like every optimiser-driven algorithm, and keeps an EMA of the parameters for sampling (iCT samples the
    EMA; it is not the target). ``state = trainer.init(key, params)`` gives a :class:`TrainState`;
    ``trainer.step(key, state, batch)`` returns it and a :class:`ConsistencyInfo`. Run it with
    :func:`jaxbayes.base.fit`; sample with :func:`consistency_sampler`.

    Args:
      apply_fn: ``apply_fn(params, x_in, c_noise)``, the raw network ``F`` on one point.
      optimizer: an optax optimiser (iCT: RAdam, lr 1e-4 on images).
      schedule: a :class:`ConsistencySchedule`; its ``total_steps`` should be the run's length.
      sigma_data: the data's standard deviation (the parameterisation's ``sigma_d``).
      distance, c: see :func:`consistency_distance` (default iCT's pseudo-Huber, ``c = 0.00054 sqrt(d)``).
      ema_decay: decay of the sampling EMA in ``[0, 1)``.
      nan_policy: ``"skip"`` or ``"raise"``, as in :func:`jaxbayes.base.fit`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxbayes.base import fit
      >>> apply_fn = lambda p, x, c: p * x  # one scalar parameter
      >>> trainer = consistency_trainer(apply_fn, optax.adam(1e-2), ConsistencySchedule(total_steps=20))
      >>> state = trainer.init(jax.random.key(0), jnp.array(0.0))
      >>> state, infos = fit(jax.random.key(1), trainer, state, 20, data=jnp.ones((64, 1)), batch_size=16)
      >>> int(state.step), [int(infos.num_scales[0]), int(infos.num_scales[-1])]
      (20, [11, 1281])
    """
    check_choice("distance", distance, DISTANCES)
    check_choice("nan_policy", nan_policy, NAN_POLICIES)
    check_positive("sigma_data", sigma_data)
    if c is not None:
        check_positive("c", c)
    if not isinstance(schedule, ConsistencySchedule):
        raise TypeError(f"schedule must be a ConsistencySchedule, got {type(schedule).__name__}")
    if isinstance(ema_decay, int | float) and not 0 <= ema_decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")

    def init(key: PRNGKey, params: PyTree) -> TrainState:
        del key
        return trainer_init(optimizer, params)

    def step(key: PRNGKey, state: TrainState, batch: Array) -> tuple[TrainState, ConsistencyInfo]:
        return consistency_step(apply_fn, optimizer, schedule, key, state, batch, sigma_data=sigma_data,
                                distance=distance, c=c, ema_decay=ema_decay, nan_policy=nan_policy)

    return Algorithm(init, step, nan_policy)


def consistency_sampler(key: PRNGKey, f: DenoiseFn, shape: Shape, *, sigmas: ArrayLike = (80.0,),
                        sigma_min: ArrayLike = 0.002, x_init: Array | None = None,
                        dtype: DTypeLike | None = None) -> SamplerOutput:
    r"""Multistep consistency sampling (Song et al. 2023, Algorithm 1).

    With decreasing levels ``sigmas = (tau_0 = sigma_max, tau_1, ..., tau_{M-1})``:
    ``x = f(tau_0 z_0, tau_0)``, then for each later level
    ``x = f(x + sqrt(tau_m^2 - sigma_min^2) z_m, tau_m)``. One level is one-step generation; iCT's two-step
    CIFAR-10 levels are ``(80, 0.821)``. ``nfe = M``.

    Args:
      key: one PRNG key (one sample).
      f: the consistency function ``f(x, sigma)`` of one sample.
      shape: shape of one sample.
      sigmas: the ``M >= 1`` decreasing levels, each ``> sigma_min``; the first is the start's noise level.
      sigma_min: the consistency function's boundary level (its ``f(x, sigma_min) = x``).
      x_init: the starting point instead of ``tau_0 z_0``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> point = lambda x, sigma: jnp.full_like(x, 2.0)  # all data at a single point
      >>> out = consistency_sampler(jax.random.key(0), point, (3,), sigmas=(80.0, 0.8))
      >>> out.samples.tolist(), int(out.nfe)
      ([2.0, 2.0, 2.0], 2)
    """
    dtype = default_dtype(dtype)
    sigmas = jnp.asarray(sigmas, dtype)
    check_ndim("sigmas", sigmas, 1)
    if sigmas.shape[0] == 0:
        raise ValueError("sigmas must hold at least one noise level, got an empty array")
    check_positive("sigmas", sigmas)
    check_positive("sigma_min", sigma_min)
    v, lo = concrete_value(sigmas), concrete_value(sigma_min)
    if v is not None and (np.any(np.diff(v) >= 0) or (lo is not None and np.any(v <= lo))):
        raise ValueError(f"sigmas must be strictly decreasing and > sigma_min = {sigma_min}, got {v.tolist()}")
    k_init, key = split_key(key, x_init)
    x = start_at_sigma(k_init, sigmas[0], shape, x_init, f, "f(x, sigma)")
    x = f(x, sigmas[0])

    def renoise(x, i, z):
        tau = sigmas[i + 1]
        return f(x + jnp.sqrt(jnp.maximum(tau**2 - sigma_min**2, 0.0)) * z[0], tau)

    num = sigmas.shape[0]
    if num > 1:
        x = scan_with_noise(renoise, x, key, num - 1, 1, x)
    return SamplerOutput(x, jnp.asarray(num, jnp.int32), jnp.asarray(True))


__all__ = [
    "DISTANCES",
    "ConsistencyInfo",
    "ConsistencySchedule",
    "consistency_distance",
    "consistency_fn",
    "consistency_loss",
    "consistency_sampler",
    "consistency_step",
    "consistency_trainer",
    "default_huber_c",
]
