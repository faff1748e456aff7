"""Correctors of the predictor-corrector sampler: Langevin MCMC steps at a fixed noise level.

A corrector is a small frozen pytree with ``num_steps`` (static: Langevin steps per noise level) and
``step(sde, score_fn, x, t, z) -> (x, x_mean)`` for one Langevin step with the standard normal draw ``z``:
``x <- x + e score(x, t) + sqrt(2 e) z``. The variants differ only in the step size ``e``.
:func:`as_corrector` turns today's names (with ``snr`` and ``num_steps``) into objects; a new corrector is
one class here.

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
    """Song et al.'s ``alpha_i``: 1 for VE, ``1 - beta(t) / N`` (the discrete DDPM ``alpha_i``) otherwise."""
    return 1.0 if isinstance(sde, VESDE) else 1 - sde.beta(t) / sde.N


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
    r"""Langevin corrector with the step from a signal-to-noise ratio (Song et al. 2021, Algorithm 5).

    ``e = 2 alpha (snr ||z|| / ||score||)^2``.

    Args:
      snr: the signal-to-noise ratio ``r``.
      num_steps: corrector steps per noise level.

    Example:
      >>> Langevin(snr=0.1, num_steps=2)
      Langevin(snr=0.1, num_steps=2)
    """

    snr: ArrayLike = 0.16
    num_steps: int = 1

    def __post_init__(self):
        _validate(self)

    def step_size(self, sde, x, t, score, z):
        grad_norm = jnp.linalg.norm(score.ravel())
        noise_norm = jnp.linalg.norm(z.ravel())
        return 2 * langevin_alpha(sde, t) * (self.snr * noise_norm / jnp.where(grad_norm > 0, grad_norm, 1.0)) ** 2


@_register
@dataclasses.dataclass(frozen=True)
class AnnealedLangevin(Corrector):
    r"""Annealed Langevin dynamics (NCSN, Song & Ermon 2019): ``e = 2 alpha (snr s(t))^2``.

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
