"""Correctors of the predictor-corrector sampler: Langevin MCMC steps at a fixed noise level.

A corrector is a small frozen pytree with ``num_steps`` (static: Langevin steps per noise level) and
``step(sde, score_fn, x, t, z) -> (x, x_mean)`` for one Langevin step with the standard normal draw ``z``:
``x <- x + e score(x, t) + sqrt(2 e) z``. The variants differ only in the step size ``e``.
:func:`as_corrector` turns today's names (with ``snr`` and ``num_steps``) into objects; a new corrector is
one class here.

Every step size here depends on the sample's own state only (never on other samples of a batch), so samples
do not depend on the batch size or the device count, and every step is bounded by the noise level: for
``x_t = m(t) x_0 + s(t) z`` the second-order Tweedie identity
``grad^2 log p_t(x) = -I / s^2 + (m^2 / s^4) Cov[x_0 | x_t = x]`` gives ``-grad^2 log p_t <= I / s(t)^2`` for
*any* data, so a step ``e <= 2 alpha (snr s(t))^2`` has ``e L <= 2 snr^2`` against the largest curvature ``L``
of ``-log p_t``: the unadjusted Langevin step is stable (``e L < 2``) and its stationary-variance bias factor
``1 / (1 - e L / 2)`` is at most ``1 / (1 - snr^2)`` (2.6 % at the default ``snr = 0.16``).

Reference: Song et al., "Score-Based Generative Modeling through SDEs" (ICLR 2021), Algorithms 4 and 5;
Song & Ermon, "Generative Modeling by Estimating Gradients of the Data Distribution" (NeurIPS 2019).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_int_range, check_positive
from jaxbayes.sde._sdes import VESDE
from jaxbayes.typing import SDE, Array, ArrayLike, ScoreFn


def langevin_alpha(sde: SDE, t: Array) -> Array:
    """Song et al.'s ``alpha_i``: 1 for VE, ``exp(-beta(t) / N)`` otherwise.

    Song et al. use the discrete DDPM ``alpha_i = 1 - beta_i`` with ``beta_i = beta(t) / N``; ``exp(-beta_i)``
    equals it to first order in ``1 / N`` (relative difference below ``beta_i^2 / 2 = 2e-4`` at Song's
    ``N = 1000``, ``beta_max = 20``) and stays in ``(0, 1]`` for every ``N``: ``1 - beta(t) / N`` is negative
    when ``N < beta_max``, which made the step negative and the samples NaN.
    """
    return 1.0 if isinstance(sde, VESDE) else jnp.exp(-sde.beta(t) / sde.N)


class Corrector:
    """Base class: ``num_steps`` Langevin steps ``x <- x + e score + sqrt(2 e) z`` per noise level."""

    num_steps: int = 1

    def step_size(self, sde: SDE, x: Array, t: Array, score: Array, z: Array) -> Array:
        """The step size ``e`` of one step at ``x`` with score ``score`` and noise ``z``."""
        raise NotImplementedError

    def step(self, sde: SDE, score_fn: ScoreFn, x: Array, t: Array, z: Array) -> tuple[Array, Array]:
        """One Langevin step; returns ``(x, x_mean)``."""
        grad = score_fn(x, t)
        e = self.step_size(sde, x, t, grad, z)
        mean = x + e * grad
        return mean + jnp.sqrt(2 * e) * z, mean


def _register(cls):
    return jax.tree_util.register_dataclass(cls, data_fields=["snr"], meta_fields=["num_steps"])


def _validate(self) -> None:
    check_positive("snr", self.snr)
    object.__setattr__(self, "num_steps", check_int_range("num_steps", self.num_steps, 0))


@_register
@dataclasses.dataclass(frozen=True)
class Langevin(Corrector):
    r"""Langevin corrector with the step from a signal-to-noise ratio (Song et al. 2021, Algorithm 5), per sample.

    ``e = 2 alpha snr^2 d / max(||score(x, t)||^2, d / s(t)^2)`` for ``d = x.size`` and ``alpha`` of
    :func:`langevin_alpha`; equivalently ``e = 2 alpha snr^2 min(d / ||score||^2, s(t)^2)``.

    Song et al. choose ``e`` so that the step's drift ``e score`` is ``snr`` times its noise ``sqrt(2 e) z``
    in norm, ``e = 2 alpha (snr ||z|| / ||score||)^2``, with both norms *averaged over the batch*. Averaging
    couples the samples of a batch (a sample would depend on the batch size and the device count), so here
    each sample uses its own state, with two changes that make the rule stable:

    * ``||z||^2`` is replaced by its expectation ``d``: the step no longer depends on the draw it scales,
      so the added noise is exactly Gaussian.
    * ``||score||^2`` is floored at ``d / s(t)^2``, the expected squared score norm of pure noise at this
      level. A single sample's ``d / ||score||^2`` is heavy-tailed where the score nearly vanishes (modes,
      saddles between modes; in ``d <= 2`` its expectation is infinite), and those huge steps threw samples
      to ``|x| ~ 1e4`` (issue 10). The floor keeps ``e <= 2 alpha (snr s(t))^2``, the bound under which the
      step is stable for any data (the module docstring: ``-grad^2 log p_t <= I / s(t)^2``). It is also the
      batch rule's value in the high-noise limit: by Stam's inequality the marginal's Fisher information
      ``E||score||^2`` is at most ``d / s(t)^2``, with equality for a point mass.

    So the drift-to-noise ratio ``||e score|| / (sqrt(2 e) sqrt(d))`` is exactly ``sqrt(alpha) snr`` where the
    score is at least as large as pure noise's (far from the data, where a fixed step would overshoot) and
    smaller elsewhere: ``snr`` keeps Song et al.'s meaning as an upper bound of the signal-to-noise ratio.

    Args:
      snr: the signal-to-noise ratio ``r`` (default 0.16, Song et al.'s VE value).
      num_steps: corrector steps per noise level (default 1).

    Example:
      >>> Langevin(snr=0.1, num_steps=2)
      Langevin(snr=0.1, num_steps=2)
    """

    snr: ArrayLike = 0.16
    num_steps: int = 1

    def __post_init__(self):
        _validate(self)

    def step_size(self, sde, x, t, score, z):
        d = x.size
        score_sq = jnp.sum(jnp.square(score))
        # d / s^2 is +inf at s = 0 (a VE/VP grid reaching t = 0), which gives e = 0 rather than NaN.
        return 2 * langevin_alpha(sde, t) * self.snr**2 * d / jnp.maximum(score_sq, d / sde.std(t) ** 2)


@_register
@dataclasses.dataclass(frozen=True)
class AnnealedLangevin(Corrector):
    r"""Annealed Langevin dynamics (NCSN, Song & Ermon 2019): ``e = 2 alpha (snr s(t))^2``.

    The step is tied to the noise level only (NCSN's ``e_i = epsilon sigma_i^2 / sigma_L^2``); it is the bound
    of :class:`Langevin`'s step, stable for any data (module docstring).

    Args:
      snr: the step-size ratio ``r`` (NCSN's ``sqrt(epsilon / 2) / sigma_min``-scale constant).
      num_steps: corrector steps per noise level.

    Example:
      >>> AnnealedLangevin(snr=0.1).num_steps
      1
    """

    snr: ArrayLike = 0.16
    num_steps: int = 1

    def __post_init__(self):
        _validate(self)

    def step_size(self, sde, x, t, score, z):
        return 2 * langevin_alpha(sde, t) * (self.snr * sde.std(t)) ** 2


@dataclasses.dataclass(frozen=True)
class NoCorrector(Corrector):
    """No corrector steps (predictor-only sampling); draws no noise."""

    num_steps: int = 0

    def step_size(self, sde, x, t, score, z):
        return jnp.zeros((), x.dtype)


CORRECTORS = {"langevin": Langevin, "annealed_langevin": AnnealedLangevin, "none": NoCorrector}


def as_corrector(corrector: Corrector | str, *, snr: ArrayLike | None = None,
                 num_steps: int | None = None) -> Corrector:
    """A :class:`Corrector` from an object or one of the names ``"langevin"``, ``"annealed_langevin"``,
    ``"none"``; ``snr`` and ``num_steps`` parameterise a name (defaults of the class when ``None``).

    Example:
      >>> as_corrector("langevin", snr=0.1)
      Langevin(snr=0.1, num_steps=1)
    """
    if isinstance(corrector, Corrector):
        if snr is not None or num_steps is not None:
            raise ValueError("snr and num_corrector_steps parameterise a corrector given by name; set them on the "
                             f"corrector object instead (got {corrector!r})")
        return corrector
    if not (isinstance(corrector, str) and corrector in CORRECTORS):
        raise ValueError(f"corrector must be a Corrector or one of {sorted(CORRECTORS)}, got {corrector!r}")
    if corrector == "none":
        return NoCorrector()
    kwargs = {k: v for k, v in (("snr", snr), ("num_steps", num_steps)) if v is not None}
    return CORRECTORS[corrector](**kwargs)


__all__ = ["CORRECTORS", "AnnealedLangevin", "Corrector", "Langevin", "NoCorrector", "as_corrector",
           "langevin_alpha"]
