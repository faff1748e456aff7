"""Predictors of the predictor-corrector sampler: one reverse-time step ``t -> t + dt`` (``dt < 0``) each.

A predictor is a small frozen object with ``step(sde, score_fn, x, t, dt, z) -> (x, x_mean)`` (``z`` a
standard normal draw shaped like ``x``), ``num_evals`` score evaluations per step and ``check(sde)`` for the
SDEs it supports. :func:`as_predictor` turns today's names into objects; a new predictor is one class here.

Reference: Song et al., "Score-Based Generative Modeling through SDEs" (ICLR 2021), section 4.2 and
appendix F; Ho et al. (2020) for DDPM's ancestral step, Song & Ermon (2019) for SMLD's.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jaxbayes.sde._sdes import VESDE, VPSDE
from jaxbayes.typing import SDE, Array, ScoreFn


class Predictor:
    """Base class: one reverse-time step from ``t`` to ``t + dt`` (``dt < 0``) with the noise ``z``."""

    num_evals: int = 1

    def check(self, sde: SDE) -> None:
        """Raise ``ValueError`` if this predictor is not defined for ``sde``."""

    def step(self, sde: SDE, score_fn: ScoreFn, x: Array, t: Array, dt: Array, z: Array) -> tuple[Array, Array]:
        """Returns ``(x, x_mean)``: the new state and its noise-free part."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class EulerMaruyama(Predictor):
    r"""Euler-Maruyama on the reverse SDE: ``x += [f - g^2 s] dt + g sqrt(|dt|) z``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbayes.sde import VPSDE
      >>> x, mean = EulerMaruyama().step(VPSDE(), lambda x, t: -x, jnp.ones(1), 1.0, -0.1, jnp.zeros(1))
      >>> bool(jnp.all(x == mean))
      True
    """

    def step(self, sde, score_fn, x, t, dt, z):
        mean = x + sde.reverse_drift(score_fn, x, t) * dt
        return mean + sde.diffusion(t) * jnp.sqrt(-dt) * z, mean


@dataclasses.dataclass(frozen=True)
class ReverseDiffusion(Predictor):
    r"""The forward SDE's discretisation run backwards: ``x <- x - f_i + g_i^2 s(x, t) + g_i z`` with
    ``(f_i, g_i) = sde.discretize(x, t, |dt|)`` (Song et al. 2021, eq. 46).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbayes.sde import VESDE
      >>> x, _ = ReverseDiffusion().step(VESDE(), lambda x, t: -x, jnp.zeros(2), 1.0, -0.5, jnp.zeros(2))
      >>> x.tolist()
      [0.0, 0.0]
    """

    def step(self, sde, score_fn, x, t, dt, z):
        f, g = sde.discretize(x, t, -dt)
        mean = x - f + g**2 * score_fn(x, t)
        return mean + g * z, mean


@dataclasses.dataclass(frozen=True)
class Ancestral(Predictor):
    r"""Ancestral sampling: SMLD's for a :class:`VESDE`, DDPM's for a :class:`VPSDE` (not sub-VP).

    VE: ``x <- x + (s_t^2 - s_{t+dt}^2) score + sqrt(s_{t+dt}^2 (s_t^2 - s_{t+dt}^2) / s_t^2) z``.
    VP: with ``beta = 1 - (m_t / m_{t+dt})^2``, ``x <- (x + beta score) / sqrt(1 - beta) + sqrt(beta) z``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbayes.sde import VPSDE
      >>> x, _ = Ancestral().step(VPSDE(), lambda x, t: -x, jnp.zeros(2), 1.0, -0.5, jnp.zeros(2))
      >>> x.tolist()
      [0.0, 0.0]
    """

    def check(self, sde):
        if not isinstance(sde, VESDE | VPSDE):
            raise ValueError(f"predictor='ancestral' is defined for VESDE and VPSDE, not {type(sde).__name__}")

    def step(self, sde, score_fn, x, t, dt, z):
        score = score_fn(x, t)
        if isinstance(sde, VESDE):
            s_t, s_prev = sde.std(t), sde.std(t + dt)
            mean = x + (s_t**2 - s_prev**2) * score
            std = jnp.sqrt(s_prev**2 * (s_t**2 - s_prev**2) / s_t**2)
            return mean + std * z, mean
        beta = -jnp.expm1(2 * (sde.log_mean_coeff(t) - sde.log_mean_coeff(t + dt)))
        mean = (x + beta * score) / jnp.sqrt(1 - beta)
        return mean + jnp.sqrt(beta) * z, mean


@dataclasses.dataclass(frozen=True)
class NoPredictor(Predictor):
    """No predictor step (corrector-only sampling, e.g. annealed Langevin dynamics); draws no noise."""

    num_evals: int = 0

    def step(self, sde, score_fn, x, t, dt, z):
        return x, x


PREDICTORS = {"euler_maruyama": EulerMaruyama, "reverse_diffusion": ReverseDiffusion, "ancestral": Ancestral,
              "none": NoPredictor}


def as_predictor(predictor: Predictor | str) -> Predictor:
    """A :class:`Predictor` from an object or one of the names ``"euler_maruyama"``, ``"reverse_diffusion"``,
    ``"ancestral"``, ``"none"``.

    Example:
      >>> as_predictor("reverse_diffusion")
      ReverseDiffusion()
    """
    if isinstance(predictor, Predictor):
        return predictor
    if isinstance(predictor, str) and predictor in PREDICTORS:
        return PREDICTORS[predictor]()
    raise ValueError(f"predictor must be a Predictor or one of {sorted(PREDICTORS)}, got {predictor!r}")


__all__ = ["PREDICTORS", "Ancestral", "EulerMaruyama", "NoPredictor", "Predictor", "ReverseDiffusion",
           "as_predictor"]
