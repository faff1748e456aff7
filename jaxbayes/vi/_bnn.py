"""Bayesian neural networks: a mean-field Gaussian posterior over a flax (linen) module's parameters.

``q(theta) = prod_i N(theta_i | mu_i, sigma_i^2)`` with ``mu`` from the module's own initialiser and small
``sigma``. Forward passes draw the network's randomness in one of three ways:

* ``"sample"``: one weight draw shared by the whole batch.
* ``"local"`` (local reparameterisation, Kingma, Salimans & Welling, 2015): for ``nn.Dense`` and ``nn.Conv``
  layers the pre-activation is Gaussian given the input, ``N(x mu_W + mu_b, x^2 sigma_W^2 + sigma_b^2)``, and is
  sampled independently per example: lower-variance gradients at the cost of a second (variance) product.
  For dense layers this reproduces the per-example output distribution of weight sampling exactly; for
  convolutions every output position is sampled independently, which gives each position the exact marginal
  but ignores the correlation that a shared kernel induces between positions (an approximation).
* ``"flipout"`` (Wen et al., 2018): a weight perturbation ``Delta W`` shared by the batch is decorrelated
  across examples by random sign vectors, ``y = x mu_W + ((x * r_in) Delta W) * r_out`` (signs per example
  and channel, shared over spatial positions, so it is an exact weight perturbation for convolutions too).

Other parameters (biases of non-linear layers, normalisation scales) are sampled directly. The two linear layer
kinds are intercepted with ``flax.linen.intercept_methods`` and evaluated with clones of the user's own layer
(same features, kernel size, padding, strides, dtype), so any linen module built from them works unchanged.

The training objective is the minibatch ELBO ``(N / B) sum_b log p(y_b | x_b, theta) / T - beta KL(q || p_0)``
with a Gaussian prior ``p_0 = N(0, prior_scale^2)`` in closed form. Predictions average ``softmax`` outputs over
Monte-Carlo draws in chunks (``lax.scan``), so memory is bounded by ``chunk_size`` forward passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxbayes._checks import check_choice, check_int_range, check_positive
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree
from jaxbayes.vi._algorithms import VIInfo, VIState, guarded_update
from jaxbayes.vi._families import MeanField

_METHODS = ("local", "flipout", "sample")
_LIKELIHOODS = ("categorical", "gaussian")


def bnn_init(key: PRNGKey, module: nn.Module, x_example: ArrayLike, *, init_scale: ArrayLike = 1e-3,
             **init_kwargs) -> MeanField:
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
    return MeanField(params, log_scale)


def _lookup(tree: PyTree, path: tuple[str, ...]) -> PyTree:
    for name in path:
        tree = tree[name]
    return tree


def _linear(module: nn.Module, kernel: Array, bias: Array | None, x: Array) -> Array:
    """The user's linear layer applied with the given kernel/bias (a clone, so its configuration is kept)."""
    params = {"kernel": kernel} if bias is None else {"kernel": kernel, "bias": bias}
    return module.clone(parent=None).apply({"params": params}, x)


def _signs(key: PRNGKey, x: Array, channels: int, dtype) -> Array:
    """Random +-1 per example and channel (broadcast over spatial positions for convolutions)."""
    if x.ndim == 1:
        shape = (channels,)
    else:
        shape = (x.shape[0], *([1] * (x.ndim - 2)), channels)
    return jax.random.rademacher(key, shape, dtype)


def bnn_apply(
    key: PRNGKey,
    module: nn.Module,
    q: MeanField,
    x: ArrayLike,
    *,
    method: str = "local",
    mask: PyTree | None = None,
    **apply_kwargs,
) -> Array:
    """One stochastic forward pass of the Bayesian network.

    Args:
      key: PRNG key.
      module: the flax linen module.
      q: :class:`MeanField` over the module's ``params``.
      x: input batch.
      method: ``"local"`` (local reparameterisation), ``"flipout"`` or ``"sample"`` (see module docstring).
      mask: optional pytree of 0/1 arrays shaped like the parameters (sparse subspace): masked weights are
        exactly zero.
      **apply_kwargs: passed to ``module.apply``.

    Returns:
      The module's output.
    """
    check_choice("method", method, _METHODS)
    mean, scale = q.mean, q.scale()
    if mask is not None:
        if jax.tree.structure(mask) != jax.tree.structure(mean):
            raise ValueError("mask must have the parameters' pytree structure")
        mean = jax.tree.map(lambda m, k: m * k, mean, mask)
        scale = jax.tree.map(lambda s, k: s * k, scale, mask)
    k_theta, k_layers = jax.random.split(key)
    leaves, treedef = jax.tree.flatten(mean)
    noise = jax.random.split(k_theta, len(leaves))
    theta = jax.tree.unflatten(treedef, [m + s * jax.random.normal(k, m.shape, m.dtype) for m, s, k in zip(
        leaves, jax.tree.leaves(scale), noise, strict=True)])
    if method == "sample":
        return module.apply({"params": theta}, x, **apply_kwargs)

    inside = [False]  # guard: clones of intercepted layers must run the plain layer

    def interceptor(next_fun, args, kwargs, context):
        mod = context.module
        if inside[0] or context.method_name != "__call__" or not isinstance(mod, nn.Dense | nn.Conv):
            return next_fun(*args, **kwargs)
        inp = args[0]
        m, s = _lookup(mean, mod.path), _lookup(scale, mod.path)
        mb, sb = m.get("bias"), s.get("bias")
        lkey = mod.make_rng("bnn")
        inside[0] = True
        try:
            mu_out = _linear(mod, m["kernel"], mb, inp)
            if method == "local":
                var_out = _linear(mod, s["kernel"] ** 2, None if sb is None else sb**2, inp**2)
                eps = jax.random.normal(lkey, mu_out.shape, mu_out.dtype)
                out = mu_out + jnp.sqrt(var_out + jnp.finfo(mu_out.dtype).tiny) * eps
            else:
                kw, kb, ki, ko = jax.random.split(lkey, 4)
                d_kernel = s["kernel"] * jax.random.normal(kw, s["kernel"].shape, s["kernel"].dtype)
                r_in = _signs(ki, inp, inp.shape[-1], inp.dtype)
                r_out = _signs(ko, mu_out, mu_out.shape[-1], mu_out.dtype)
                pert = _linear(mod, d_kernel, None if sb is None else jnp.zeros_like(sb), inp * r_in) * r_out
                if sb is not None:
                    pert = pert + sb * jax.random.normal(kb, sb.shape, sb.dtype)
                out = mu_out + pert
        finally:
            inside[0] = False
        return out

    with nn.intercept_methods(interceptor):
        return module.apply({"params": theta}, x, rngs={"bnn": k_layers}, **apply_kwargs)


def log_likelihood(outputs: Array, y: Array, likelihood: str, noise_scale: ArrayLike = 1.0) -> Array:
    """Per-example log-likelihood: categorical over logits, or Gaussian with ``noise_scale``."""
    if likelihood == "categorical":
        logp = jax.nn.log_softmax(outputs, axis=-1)
        return jnp.take_along_axis(logp, jnp.asarray(y, jnp.int32)[:, None], axis=-1)[:, 0]
    r = (outputs.reshape(y.shape) - y) / noise_scale
    return -0.5 * r**2 - jnp.log(noise_scale) - 0.5 * jnp.log(2 * jnp.pi)


def masked_kl(q: MeanField, mask: PyTree | None, prior_scale: ArrayLike) -> Array:
    """``KL(q || N(0, prior_scale^2))`` summed over the active (mask = 1) coordinates only."""
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


def bnn_objective(key: PRNGKey, module: nn.Module, q: MeanField, batch, *, num_data: int, mask=None,
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


def predict(key: PRNGKey, module: nn.Module, q: MeanField, x: ArrayLike, *, num_samples: int = 32,
            chunk_size: int = 8, method: str = "local", mask=None, likelihood: str = "categorical") -> Array:
    """Monte-Carlo predictive mean over ``num_samples`` draws, ``chunk_size`` at a time (bounded memory).

    Returns the mean of ``softmax(outputs)`` for classification or of the outputs for regression.
    """
    num_samples = check_int_range("num_samples", num_samples, 1)
    chunk_size = check_int_range("chunk_size", chunk_size, 1, num_samples)
    if num_samples % chunk_size:
        raise ValueError(f"num_samples ({num_samples}) must be a multiple of chunk_size ({chunk_size})")
    check_choice("likelihood", likelihood, _LIKELIHOODS)
    keys = jax.random.split(key, num_samples).reshape(num_samples // chunk_size, chunk_size)

    def one(k):
        out = bnn_apply(k, module, q, x, method=method, mask=mask)
        return jax.nn.softmax(out, axis=-1) if likelihood == "categorical" else out

    def body(total, ks):
        return total + jnp.sum(jax.vmap(one)(ks), axis=0), None

    shape = jax.eval_shape(one, keys[0, 0])
    total, _ = jax.lax.scan(body, jnp.zeros(shape.shape, shape.dtype), keys)
    return total / num_samples


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
    check_choice("method", method, _METHODS)
    check_choice("likelihood", likelihood, _LIKELIHOODS)
    check_choice("nan_policy", nan_policy, ("skip", "raise"))
    num_data = check_int_range("num_data", num_data, 1)
    warmup_steps = check_int_range("warmup_steps", warmup_steps, 0)
    check_positive("prior_scale", prior_scale)
    check_positive("noise_scale", noise_scale)
    check_positive("temperature", temperature)
    check_positive("kl_weight", kl_weight, strict=False)

    def init(key: PRNGKey, x_example: ArrayLike) -> VIState:
        q = bnn_init(key, module, x_example, init_scale=init_scale)
        zero = jnp.zeros((), jnp.int32)
        return VIState(q, optimizer.init(q), zero, zero, jnp.full((), -1, jnp.int32))

    def step(key: PRNGKey, state: VIState, batch) -> tuple[VIState, VIInfo]:
        _check_structure(optimizer, state)
        beta = _beta(kl_weight, warmup_steps, state.step)

        def loss(q):
            value, ll, kl = bnn_objective(key, module, q, batch, num_data=num_data, method=method,
                                          likelihood=likelihood, noise_scale=noise_scale,
                                          prior_scale=prior_scale, kl_weight=beta, temperature=temperature)
            return -value, (value, ll, kl)

        (_, (value, ll, kl)), grads = jax.value_and_grad(loss, has_aux=True)(state.q)
        new_state, finite = guarded_update(optimizer, state, grads, value, nan_policy)
        return new_state, VIInfo(value, ll, kl, beta, optax.tree.norm(grads), finite)

    def predict_fn(key: PRNGKey, state: VIState, x: ArrayLike, *, num_samples: int = 32,
                   chunk_size: int = 8) -> Array:
        return predict(key, module, state.q, x, num_samples=num_samples, chunk_size=chunk_size, method=method,
                       likelihood=likelihood)

    return BNNAlgorithm(init, step, predict_fn, nan_policy)


def _beta(kl_weight, warmup_steps, step):
    if warmup_steps:
        return kl_weight * jnp.minimum(1.0, (step + 1) / warmup_steps)
    return jnp.asarray(kl_weight, jnp.result_type(float))


def _check_structure(optimizer, state) -> None:
    expected = jax.tree.structure(jax.eval_shape(optimizer.init, state.q))
    if expected != jax.tree.structure(state.opt_state):
        raise ValueError("the parameter pytree structure changed since init: q has structure "
                         f"{jax.tree.structure(state.q.mean)}, which does not match the optimiser state; "
                         "call init again for a new parameter structure")


__all__ = ["BNNAlgorithm", "bnn_apply", "bnn_init", "bnn_objective", "bnn_vi", "log_likelihood", "masked_kl",
           "predict"]
