"""Bayesian neural networks: mean-field Gaussian VI over a flax (linen) module's parameters.

``q(theta) = prod_i N(theta_i | mu_i, sigma_i^2)`` with ``mu`` from the module's own initialiser and small
``sigma``; forward passes draw the network's randomness as in :func:`jaxbayes.vi.bnn_apply` (local
reparameterisation, Flipout or weight sampling).

The training objective is the minibatch ELBO ``(N / B) sum_b log p(y_b | x_b, theta) / T - beta KL(q || p_0)``
with a Gaussian prior ``p_0 = N(0, prior_scale^2)`` in closed form. Predictions average ``softmax`` outputs over
Monte-Carlo draws in chunks (``lax.scan``), so memory is bounded by ``chunk_size`` forward passes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxbayes._checks import check_choice, check_int_range, check_positive
from jaxbayes.base import NAN_POLICIES
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree
from jaxbayes.vi._bnn_forward import METHODS, bnn_apply
from jaxbayes.vi._meanfield import MeanFieldNormal
from jaxbayes.vi._state import VIState, variational_step, vi_state

LIKELIHOODS = ("categorical", "gaussian")


def bnn_init(key: PRNGKey, module: nn.Module, x_example: ArrayLike, *, init_scale: ArrayLike = 1e-3,
             **init_kwargs) -> MeanFieldNormal:
    """Mean-field posterior with means from ``module.init(key, x_example)`` and every std ``init_scale``.

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> q = bnn_init(jax.random.key(0), nn.Dense(3), jnp.ones((1, 4)))
      >>> q.mean["kernel"].shape, round(float(q.scale()["bias"][0]), 6)
      ((4, 3), 0.001)
    """
    check_positive("init_scale", init_scale)
    variables = module.init(key, x_example, **init_kwargs)
    if set(variables) != {"params"}:
        raise ValueError(f"bnn_init supports modules whose only collection is 'params', got {sorted(variables)}")
    params = variables["params"]
    log_scale = jax.tree.map(lambda p: jnp.full(p.shape, jnp.log(init_scale), p.dtype), params)
    return MeanFieldNormal(params, log_scale)


def log_likelihood(outputs: Array, y: Array, likelihood: str, noise_scale: ArrayLike = 1.0) -> Array:
    """Per-example log-likelihood: categorical ``log softmax(outputs)[y]``, or Gaussian
    ``log N(y | outputs, noise_scale^2)``.

    Example:
      >>> import jax.numpy as jnp
      >>> [round(float(v), 4) for v in log_likelihood(jnp.zeros((1, 2)), jnp.array([1]), "categorical")]  # log 1/2
      [-0.6931]
    """
    if likelihood == "categorical":
        logp = jax.nn.log_softmax(outputs, axis=-1)
        return jnp.take_along_axis(logp, jnp.asarray(y, jnp.int32)[:, None], axis=-1)[:, 0]
    r = (outputs.reshape(y.shape) - y) / noise_scale
    return -0.5 * r**2 - jnp.log(noise_scale) - 0.5 * jnp.log(2 * jnp.pi)


def masked_kl(q: MeanFieldNormal, mask: PyTree | None, prior_scale: ArrayLike) -> Array:
    """``KL(q || N(0, prior_scale^2))`` summed over the active (mask = 1) coordinates only:
    ``sum_i mask_i [(sigma_i^2 + mu_i^2) / (2 s^2) - 1/2 + log s - log sigma_i]``.

    Example:
      >>> import jax.numpy as jnp
      >>> q = MeanFieldNormal({"w": jnp.array([1.0, 2.0])}, {"w": jnp.zeros(2)})
      >>> float(masked_kl(q, {"w": jnp.array([1.0, 0.0])}, 1.0))             # only mu = 1 counts: 1/2
      0.5
    """
    def leaf_kl(m, ls, k):
        kl = 0.5 * ((jnp.exp(2 * ls) + m**2) / prior_scale**2 - 1.0) + jnp.log(prior_scale) - ls
        return jnp.sum(kl if k is None else kl * k)

    masks = jax.tree.leaves(mask) if mask is not None else [None] * len(jax.tree.leaves(q.mean))
    return sum(leaf_kl(m, ls, k) for m, ls, k in zip(jax.tree.leaves(q.mean), jax.tree.leaves(q.log_scale),
                                                      masks, strict=True))


class BNNAlgorithm(NamedTuple):
    """``init(key, x_example) -> VIState``; ``step(key, state, (x, y)) -> (VIState, VIInfo)``;
    ``predict(key, state, x, *, num_samples, chunk_size) -> mean predictive (probabilities for classification,
    outputs for regression)``; and ``nan_policy``."""

    init: Callable
    step: Callable
    predict: Callable
    nan_policy: str = "skip"


def bnn_objective(key: PRNGKey, module: nn.Module, q: MeanFieldNormal, batch, *, num_data: int, mask=None,
                  method: str = "local", likelihood: str = "categorical", noise_scale: ArrayLike = 1.0,
                  prior_scale: ArrayLike = 1.0, kl_weight: ArrayLike = 1.0, temperature: ArrayLike = 1.0):
    """Minibatch ELBO ``(N/B) sum_b log p(y_b|x_b) / T - beta KL`` (one forward draw); returns ``(value,
    expected_loglik, kl)``."""
    x, y = batch
    b = jnp.shape(y)[0]
    if b > num_data:
        raise ValueError(f"batch size {b} is larger than num_data={num_data}")
    out = bnn_apply(key, module, q, x, method=method, mask=mask)
    ll = (num_data / b) * jnp.sum(log_likelihood(out, y, likelihood, noise_scale))
    kl = masked_kl(q, mask, prior_scale)
    return ll / temperature - kl_weight * kl, ll, kl


def predict(key: PRNGKey, module: nn.Module, q: MeanFieldNormal, x: ArrayLike, *, num_samples: int = 32,
            chunk_size: int = 8, method: str = "local", mask=None, likelihood: str = "categorical") -> Array:
    """Monte-Carlo predictive mean over ``num_samples`` draws, ``chunk_size`` at a time (bounded memory).

    Returns the mean of ``softmax(outputs)`` for classification or of the outputs for regression.
    """
    num_samples = check_int_range("num_samples", num_samples, 1)
    chunk_size = check_int_range("chunk_size", chunk_size, 1, num_samples)
    if num_samples % chunk_size:
        raise ValueError(f"num_samples ({num_samples}) must be a multiple of chunk_size ({chunk_size})")
    check_choice("likelihood", likelihood, LIKELIHOODS)
    keys = jax.random.split(key, num_samples).reshape(num_samples // chunk_size, chunk_size)

    def one(k):
        out = bnn_apply(k, module, q, x, method=method, mask=mask)
        return jax.nn.softmax(out, axis=-1) if likelihood == "categorical" else out

    def body(total, ks):
        return total + jnp.sum(jax.vmap(one)(ks), axis=0), None

    shape = jax.eval_shape(one, keys[0, 0])
    total, _ = jax.lax.scan(body, jnp.zeros(shape.shape, shape.dtype), keys)
    return total / num_samples


def bnn_step_objective(key: PRNGKey, q: MeanFieldNormal, batch, kl_weight: ArrayLike, *, module: nn.Module,
                       **options) -> tuple[Array, Array, Array]:
    """:func:`bnn_objective` in the ``objective_fn(key, q, batch, kl_weight)`` form that
    :func:`jaxbayes.vi._state.variational_step` ascends (``options`` as :func:`bnn_objective`'s)."""
    return bnn_objective(key, module, q, batch, kl_weight=kl_weight, **options)


def bnn_vi(
    module: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    num_data: int,
    method: str = "local",
    likelihood: str = "categorical",
    noise_scale: ArrayLike = 1.0,
    prior_scale: ArrayLike = 1.0,
    init_scale: ArrayLike = 1e-3,
    kl_weight: ArrayLike = 1.0,
    warmup_steps: int = 0,
    temperature: ArrayLike = 1.0,
    nan_policy: str = "skip",
) -> BNNAlgorithm:
    """Mean-field VI for a flax module (see the module docstring).

    Args:
      module: flax linen module mapping inputs to logits (categorical) or predictions (gaussian).
      optimizer: any optax optimiser.
      num_data: training-set size ``N`` (the minibatch log-likelihood is scaled by ``N / B``).
      method: ``"local"``, ``"flipout"`` or ``"sample"``.
      likelihood: ``"categorical"`` or ``"gaussian"`` (with ``noise_scale``).
      prior_scale: std of the zero-mean Gaussian prior.
      init_scale: initial posterior std.
      kl_weight, warmup_steps, temperature, nan_policy: as in :func:`jaxbayes.vi.gaussian_vi`.

    Example:
      >>> import jax, jax.numpy as jnp, optax, flax.linen as nn
      >>> alg = bnn_vi(nn.Dense(2), optax.adam(1e-2), num_data=8)
      >>> x, y = jnp.ones((8, 3)), jnp.zeros(8, jnp.int32)
      >>> state = alg.init(jax.random.key(0), x)
      >>> state, info = alg.step(jax.random.key(1), state, (x, y))
      >>> alg.predict(jax.random.key(2), state, x, num_samples=4, chunk_size=2).shape
      (8, 2)
    """
    check_choice("method", method, METHODS)
    check_choice("likelihood", likelihood, LIKELIHOODS)
    check_choice("nan_policy", nan_policy, NAN_POLICIES)
    num_data = check_int_range("num_data", num_data, 1)
    warmup_steps = check_int_range("warmup_steps", warmup_steps, 0)
    check_positive("prior_scale", prior_scale)
    check_positive("noise_scale", noise_scale)
    check_positive("temperature", temperature)
    check_positive("kl_weight", kl_weight, strict=False)

    def init(key: PRNGKey, x_example: ArrayLike) -> VIState:
        return vi_state(bnn_init(key, module, x_example, init_scale=init_scale), optimizer)

    objective_fn = functools.partial(bnn_step_objective, module=module, num_data=num_data, method=method,
                                     likelihood=likelihood, noise_scale=noise_scale, prior_scale=prior_scale,
                                     temperature=temperature)
    step = functools.partial(variational_step, objective_fn=objective_fn, optimizer=optimizer, kl_weight=kl_weight,
                             warmup_steps=warmup_steps, nan_policy=nan_policy)

    def predict_fn(key: PRNGKey, state: VIState, x: ArrayLike, *, num_samples: int = 32,
                   chunk_size: int = 8) -> Array:
        return predict(key, module, state.q, x, num_samples=num_samples, chunk_size=chunk_size, method=method,
                       likelihood=likelihood)

    return BNNAlgorithm(init, step, predict_fn, nan_policy)


__all__ = ["LIKELIHOODS", "BNNAlgorithm", "bnn_init", "bnn_objective", "bnn_step_objective", "bnn_vi",
           "log_likelihood", "masked_kl", "predict"]
