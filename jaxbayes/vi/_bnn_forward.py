"""Stochastic forward passes of a Bayesian neural network with a mean-field Gaussian over a flax module's params.

Three ways to draw the network's randomness:

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
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxbayes._checks import check_choice
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree
from jaxbayes.vi._meanfield import MeanFieldNormal
from jaxbayes.vi._tree_paths import get_path

METHODS = ("local", "flipout", "sample")


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
    q: MeanFieldNormal,
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
      q: :class:`MeanFieldNormal` over the module's ``params``.
      x: input batch.
      method: ``"local"`` (local reparameterisation), ``"flipout"`` or ``"sample"`` (see module docstring).
      mask: optional pytree of 0/1 arrays shaped like the parameters (sparse subspace): masked weights are
        exactly zero.
      **apply_kwargs: passed to ``module.apply``.

    Returns:
      The module's output.
    """
    check_choice("method", method, METHODS)
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
        m, s = get_path(mean, mod.path), get_path(scale, mod.path)
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


__all__ = ["METHODS", "bnn_apply"]
