"""BayesCap: a Bayesian identity cap that adds calibrated uncertainty to a frozen network (Upadhyay et al.,
"BayesCap: Bayesian Identity Cap for Calibrated Uncertainty in Frozen Neural Networks", ECCV 2022).

The frozen network's outputs ``y_hat = f(x)`` are computed once; a small head ``g`` maps each ``y_hat`` to a
generalised Gaussian ``GGD(mu, alpha, beta)`` (location, scale, shape) with density

    ``p(y) = beta / (2 alpha Gamma(1/beta)) exp(-(|y - mu| / alpha)^beta)``

(``beta = 2``: Gaussian with variance ``alpha^2 / 2``; ``beta = 1``: Laplace). It is trained on ``(y_hat, y)``
pairs with the identity loss, averaged over elements,

    ``L = lambda_id |mu - y_hat|^2 - log beta + log(2 alpha) + lgamma(1/beta) + (|y - mu| / alpha)^beta``,

so ``mu`` reproduces the frozen prediction while ``alpha`` and ``beta`` model the error around it. The head's
raw outputs become ``alpha = softplus(a) + eps`` and ``beta = softplus(b) + eps``; ``(|y - mu| / alpha)^beta`` is
written so that its gradient stays finite at ``y = mu`` (where ``|r|^beta`` has an infinite one for
``beta < 1``). The predictive variance is ``alpha^2 Gamma(3/beta) / Gamma(1/beta)``; intervals follow from
``(|y - mu| / alpha)^beta ~ Gamma(1/beta, 1)``.

:func:`bayescap` is a :class:`jaxbayes.base.Algorithm` (any optax optimiser, :func:`jaxbayes.base.fit` with
``data=(y_hat, y)``); :class:`BayesCapMLP` is a flax head with a residual ``mu = y_hat + ...`` that starts at the
identity with ``beta = 2``; :meth:`GGD.cdf` gives probability integral transforms and :func:`interval_coverage`
the regression calibration check (the classification metrics are :mod:`jaxbayes.vi.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbayes._checks import check_choice, check_positive, check_same_shape
from jaxbayes.base import NAN_POLICIES, Algorithm, OptInfo, OptState, optimizer_algorithm
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree

SOFTPLUS_INV_2 = float(np.log(np.expm1(2.0)))  # softplus(SOFTPLUS_INV_2) = 2: a Gaussian shape at init


def ggd_log_prob(y: ArrayLike, mu: ArrayLike, alpha: ArrayLike, beta: ArrayLike) -> Array:
    """Elementwise ``log GGD(y; mu, alpha, beta) = log beta - log(2 alpha) - lgamma(1/beta) - (|y - mu|/alpha)^beta``.

    Equals ``scipy.stats.gennorm(beta, loc=mu, scale=alpha).logpdf(y)``. Written by hand because
    ``jax.scipy.stats.gennorm`` has no location or scale and its ``|x|^beta`` has a NaN gradient at ``x = 0``.

    Example:
      >>> round(float(ggd_log_prob(0.0, 0.0, 1.0, 2.0)), 4)  # N(0; 0, 1/2) = 1 / sqrt(pi)
      -0.5724
    """
    y, mu, alpha, beta = (jnp.asarray(v) for v in (y, mu, alpha, beta))
    z_beta = _power(jnp.abs(y - mu) / alpha, beta)
    return jnp.log(beta) - jnp.log(2 * alpha) - jax.scipy.special.gammaln(1 / beta) - z_beta


def _power(z: Array, beta: Array) -> Array:
    """``z^beta`` for ``z >= 0`` with finite gradients at ``z = 0`` (the double-``where`` keeps ``log 0`` out)."""
    pos = z > 0
    return jnp.where(pos, jnp.exp(beta * jnp.log(jnp.where(pos, z, 1.0))), 0.0)


class GGD(NamedTuple):
    """A generalised Gaussian predictive, elementwise (arrays of one shape).

    Attributes:
      mu: location.
      alpha: scale (> 0).
      beta: shape (> 0).
    """

    mu: Array
    alpha: Array
    beta: Array

    def log_prob(self, y: ArrayLike) -> Array:
        """:func:`ggd_log_prob` of ``y``."""
        return ggd_log_prob(y, self.mu, self.alpha, self.beta)

    @property
    def variance(self) -> Array:
        """``alpha^2 Gamma(3/beta) / Gamma(1/beta)``."""
        gl = jax.scipy.special.gammaln
        return self.alpha**2 * jnp.exp(gl(3 / self.beta) - gl(1 / self.beta))

    @property
    def stddev(self) -> Array:
        """``sqrt(variance)``."""
        return jnp.sqrt(self.variance)

    def central_mass(self, y: ArrayLike) -> Array:
        """``P(|Y - mu| <= |y - mu|) = P(1/beta, (|y - mu| / alpha)^beta)``, the regularised lower incomplete
        gamma function (``(|Y - mu| / alpha)^beta ~ Gamma(1/beta, 1)``)."""
        z = jnp.abs(jnp.asarray(y) - self.mu) / self.alpha
        return jax.scipy.special.gammainc(1 / self.beta, _power(z, self.beta))

    def cdf(self, y: ArrayLike) -> Array:
        """``P(Y <= y) = (1 + sign(y - mu) central_mass(y)) / 2``."""
        return 0.5 + 0.5 * jnp.sign(jnp.asarray(y) - self.mu) * self.central_mass(y)

    def radius(self, coverage: ArrayLike) -> Array:
        """Half-width ``r`` of the central interval holding probability ``coverage``:
        ``r = alpha P^{-1}(1/beta, coverage)^{1/beta}`` with ``P`` the regularised lower incomplete gamma function
        (TFP's ``igammainv``; ``jax.scipy`` has no inverse)."""
        from tensorflow_probability.substrates import jax as tfp

        coverage = jnp.asarray(coverage, jnp.result_type(self.alpha))
        return self.alpha * tfp.math.igammainv(1 / self.beta, coverage) ** (1 / self.beta)

    def interval(self, coverage: ArrayLike) -> tuple[Array, Array]:
        """The central ``coverage`` interval ``(mu - r, mu + r)`` (see :meth:`radius`)."""
        r = self.radius(coverage)
        return self.mu - r, self.mu + r

    def quantile(self, q: ArrayLike) -> Array:
        """The ``q``-quantile ``mu + sign(q - 1/2) radius(|2 q - 1|)`` (the density is symmetric about ``mu``)."""
        q = jnp.asarray(q, jnp.result_type(self.alpha))
        return self.mu + jnp.sign(q - 0.5) * self.radius(jnp.abs(2 * q - 1))


def ggd_from_outputs(mu: ArrayLike, alpha_raw: ArrayLike, beta_raw: ArrayLike, *, eps: ArrayLike = 1e-4) -> GGD:
    """``GGD(mu, softplus(alpha_raw) + eps, softplus(beta_raw) + eps)`` from a head's unconstrained outputs.

    Example:
      >>> g = ggd_from_outputs(0.0, 0.0, SOFTPLUS_INV_2, eps=0.0)
      >>> round(float(g.alpha), 4), round(float(g.beta), 4)  # softplus(0) = log 2
      (0.6931, 2.0)
    """
    return GGD(jnp.asarray(mu), jax.nn.softplus(alpha_raw) + eps, jax.nn.softplus(beta_raw) + eps)


def bayescap_loss(pred: GGD, y_hat: ArrayLike, y: ArrayLike, *, identity_weight: ArrayLike = 1.0) -> Array:
    """The identity loss ``mean(lambda_id (mu - y_hat)^2 - log GGD(y; mu, alpha, beta))`` (module docstring).

    Example:
      >>> import jax.numpy as jnp
      >>> g = GGD(jnp.zeros(2), jnp.ones(2), jnp.full(2, 2.0))
      >>> round(float(bayescap_loss(g, jnp.ones(2), jnp.zeros(2), identity_weight=0.5)), 4)  # 0.5 + 0.5724
      1.0724
    """
    check_same_shape("pred.mu", pred.mu, "y_hat", y_hat)
    check_same_shape("y_hat", y_hat, "y", y)
    return jnp.mean(identity_weight * (pred.mu - y_hat) ** 2 - pred.log_prob(y))


class BayesCapMLP(nn.Module):
    """A BayesCap head on the last axis of ``y_hat`` (shape ``(..., k)``): an MLP of ``y_hat`` whose zero-initialised
    last layer gives ``(mu - y_hat, alpha_raw, beta_raw - softplus^{-1}(2))``, so training starts at the identity
    ``mu = y_hat`` with a Gaussian shape ``beta = 2`` and ``alpha = log 2 + eps``.

    Attributes:
      features: hidden widths.
      activation: hidden nonlinearity.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> head = BayesCapMLP((16,))
      >>> params = head.init(jax.random.key(0), jnp.ones((3, 1)))
      >>> mu, a, b = head.apply(params, jnp.ones((3, 1)))
      >>> mu.ravel().tolist(), a.shape
      ([1.0, 1.0, 1.0], (3, 1))
    """

    features: Sequence[int] = (64, 64)
    activation: Callable[[Array], Array] = nn.silu

    @nn.compact
    def __call__(self, y_hat: Array) -> tuple[Array, Array, Array]:
        h = y_hat
        for width in self.features:
            h = self.activation(nn.Dense(width)(h))
        out = nn.Dense(3 * y_hat.shape[-1], kernel_init=nn.initializers.zeros)(h)
        d_mu, alpha_raw, beta_raw = jnp.split(out, 3, axis=-1)
        return y_hat + d_mu, alpha_raw, beta_raw + SOFTPLUS_INV_2


class BayesCapAlgorithm(NamedTuple):
    """BayesCap training as a :class:`jaxbayes.base.Algorithm`.

    Attributes:
      init: ``init(key, params) -> OptState`` (the key is unused; ``params`` from e.g. ``head.init``).
      step: ``step(key, state, (y_hat, y)) -> (OptState, OptInfo)``, one optimiser step on the identity loss.
      predict: ``predict(params, y_hat) -> GGD``.
      nan_policy: ``"skip"`` or ``"raise"``.
    """

    init: Callable[[PRNGKey, PyTree], OptState]
    step: Callable[..., tuple[OptState, OptInfo]]
    predict: Callable[[PyTree, ArrayLike], GGD]
    nan_policy: str = "skip"


def bayescap(apply_fn: Callable[[PyTree, Array], tuple[Array, Array, Array]],
             optimizer: optax.GradientTransformation, *, identity_weight: ArrayLike = 1.0, eps: ArrayLike = 1e-4,
             nan_policy: str = "skip") -> BayesCapAlgorithm:
    """Train a BayesCap head on a frozen network's outputs with the identity loss (module docstring).

    Args:
      apply_fn: ``apply_fn(params, y_hat) -> (mu, alpha_raw, beta_raw)``, each shaped like ``y_hat``
        (e.g. ``BayesCapMLP().apply``).
      optimizer: any optax optimiser.
      identity_weight: ``lambda_id >= 0``, the weight of ``|mu - y_hat|^2``.
      eps: floor added to ``softplus`` of the scale and shape outputs (> 0).
      nan_policy: what a non-finite gradient does (:func:`jaxbayes.base.guarded_update`).

    Returns:
      A :class:`BayesCapAlgorithm`; run it with ``jaxbayes.base.fit(key, alg, state, n, data=(y_hat, y))``.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxbayes.base import fit
      >>> y_hat = jnp.linspace(-1.0, 1.0, 64)[:, None]
      >>> y = y_hat + 0.3 * jax.random.normal(jax.random.key(0), y_hat.shape)
      >>> head = BayesCapMLP((8,))
      >>> alg = bayescap(head.apply, optax.adam(1e-2))
      >>> state = alg.init(jax.random.key(1), head.init(jax.random.key(2), y_hat))
      >>> state, info = fit(jax.random.key(3), alg, state, 200, data=(y_hat, y))
      >>> bool(info.loss[-1] < info.loss[0]), alg.predict(state.params, y_hat).stddev.shape
      (True, (64, 1))
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable, got {type(apply_fn).__name__}")
    check_positive("identity_weight", identity_weight, strict=False)
    check_positive("eps", eps)
    check_choice("nan_policy", nan_policy, NAN_POLICIES)

    def predict(params: PyTree, y_hat: ArrayLike) -> GGD:
        y_hat = jnp.asarray(y_hat)
        outputs = apply_fn(params, y_hat)
        if not isinstance(outputs, tuple | list) or len(outputs) != 3:
            raise ValueError("apply_fn must return a tuple (mu, alpha_raw, beta_raw)")
        for name, value in zip(("mu", "alpha_raw", "beta_raw"), outputs, strict=True):
            check_same_shape(f"apply_fn's {name}", value, "y_hat", y_hat)
        return ggd_from_outputs(*outputs, eps=eps)

    def loss_fn(params: PyTree, key: PRNGKey, batch: tuple[Array, Array]) -> Array:
        del key
        if not isinstance(batch, tuple | list) or len(batch) != 2:
            raise ValueError("the batch of bayescap's step must be a pair (y_hat, y)")
        y_hat, y = batch
        return bayescap_loss(predict(params, y_hat), y_hat, y, identity_weight=identity_weight)

    alg: Algorithm = optimizer_algorithm(loss_fn, optimizer, nan_policy=nan_policy)
    return BayesCapAlgorithm(alg.init, alg.step, predict, nan_policy)


def interval_coverage(pred: GGD, y: ArrayLike, levels: ArrayLike) -> Array:
    """Fraction of targets inside each central interval: ``mean_i [|y_i - mu_i| <= radius_i(p)]`` for every level
    ``p`` in ``levels``, computed as ``mean_i [central_mass_i(y_i) <= p]``. A calibrated predictive gives
    ``coverage ~ levels`` (``mean |coverage - levels|`` is a calibration error for regression).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> y = jax.random.laplace(jax.random.key(0), (4000,))
      >>> g = GGD(jnp.zeros(4000), jnp.ones(4000), jnp.ones(4000))  # the true law
      >>> [round(float(c), 1) for c in interval_coverage(g, y, jnp.array([0.5, 0.9]))]
      [0.5, 0.9]
    """
    check_same_shape("pred.mu", pred.mu, "y", y)
    levels = jnp.atleast_1d(jnp.asarray(levels))
    mass = pred.central_mass(y).ravel()
    return jnp.mean(mass[None, :] <= levels[:, None], axis=1, dtype=mass.dtype)


__all__ = [
    "BayesCapAlgorithm",
    "BayesCapMLP",
    "GGD",
    "bayescap",
    "bayescap_loss",
    "ggd_from_outputs",
    "ggd_log_prob",
    "interval_coverage",
]
