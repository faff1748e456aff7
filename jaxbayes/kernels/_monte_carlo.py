"""Finite-width random networks from a layer spec: Monte-Carlo NNGP/NTK estimates and the empirical NTK.

The infinite-width kernels of :mod:`jaxbayes.kernels._kernel` are limits of these finite networks
(NTK parameterisation): ``E_theta[f(x1) f(x2)]`` over random initialisations converges to the NNGP and the
empirical NTK ``J(x1) J(x2)^T`` to the NTK as every hidden width grows (Jacot et al., 2018).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_int_range
from jaxbayes.kernels._kernel import Layer, validate_inputs
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree


class MonteCarloKernel(NamedTuple):
    """Monte-Carlo kernel estimates with their standard errors (over independent initialisations).

    Attributes:
      nngp: mean over samples of ``f(x1) f(x2)^T / out_dim``.
      ntk: mean over samples of the empirical NTK (``None`` unless ``compute_ntk``).
      nngp_stderr: standard error of ``nngp`` (sample standard deviation / sqrt(num_samples)).
      ntk_stderr: standard error of ``ntk``.
      num_samples: how many independent networks were drawn.
    """

    nngp: Array
    ntk: Array | None
    nngp_stderr: Array
    ntk_stderr: Array | None
    num_samples: int


def empirical_ntk(apply_fn, params: PyTree, x1: ArrayLike, x2: ArrayLike | None = None) -> Array:
    """Empirical NTK ``sum_theta df(x1)/dtheta df(x2)/dtheta`` averaged over output units, shape ``(n, m)``.

    Args:
      apply_fn: ``(params, x) -> (batch, out_dim)``, e.g. :attr:`Layer.apply_fn`.
      params: the network parameters.
      x1: inputs ``(n, ...)``.
      x2: inputs ``(m, ...)``; ``x1`` if omitted.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.kernels import Dense
      >>> net = Dense(1, W_std=1.0, b_std=1.0)
      >>> _, p = net.init_fn(jax.random.key(0), (2,))
      >>> float(empirical_ntk(net.apply_fn, p, jnp.array([[1.0, 1.0]]))[0, 0])  # |x|^2/d + 1
      2.0
    """
    x1 = jnp.asarray(x1)
    x2 = x1 if x2 is None else jnp.asarray(x2)
    j1 = jax.jacrev(apply_fn)(params, x1)
    j2 = j1 if x2 is x1 else jax.jacrev(apply_fn)(params, x2)
    out_dim = jax.eval_shape(apply_fn, params, x1[:1]).shape[-1]

    def contract(a, b):
        a = a.reshape(a.shape[0], a.shape[1], -1)
        b = b.reshape(b.shape[0], b.shape[1], -1)
        return jnp.einsum("nop,mop->nm", a, b)

    return sum(jax.tree.leaves(jax.tree.map(contract, j1, j2))) / out_dim


def monte_carlo_kernel(key: PRNGKey, layer: Layer, x1: ArrayLike, x2: ArrayLike | None = None, *,
                       num_samples: int = 64, compute_ntk: bool = False) -> MonteCarloKernel:
    """Estimate NNGP (and NTK) by drawing ``num_samples`` finite networks from ``layer.init_fn``.

    Sample ``i`` uses ``fold_in(key, i)``, so estimates do not depend on how the loop is batched.
    Each sample averages ``f(x1) f(x2)^T`` over the network's output units.

    Args:
      key: PRNG key.
      layer: the network spec (ending with a Dense/Conv readout of the desired width).
      x1: inputs ``(n, ...)``.
      x2: inputs ``(m, ...)``; ``x1`` if omitted.
      num_samples: number of independent networks (>= 2).
      compute_ntk: also estimate the NTK from empirical NTKs (costs Jacobians).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.kernels import Dense
      >>> mc = monte_carlo_kernel(jax.random.key(0), Dense(256), jnp.ones((1, 2)), num_samples=8)
      >>> bool(abs(float(mc.nngp[0, 0]) - 1.0) < 5 * float(mc.nngp_stderr[0, 0]))
      True
    """
    num_samples = check_int_range("num_samples", num_samples, 2)
    x1, x2 = validate_inputs(x1, x2)
    other = x1 if x2 is None else x2

    def one(i):
        _, params = layer.init_fn(jax.random.fold_in(key, i), x1.shape[1:])
        f1 = layer.apply_fn(params, x1)
        f2 = layer.apply_fn(params, other)
        f1 = f1.reshape(f1.shape[0], -1)
        f2 = f2.reshape(f2.shape[0], -1)
        nngp = f1 @ f2.T / f1.shape[-1]
        ntk = empirical_ntk(layer.apply_fn, params, x1, other) if compute_ntk else jnp.zeros_like(nngp)
        return nngp, ntk

    nngps, ntks = jax.lax.map(one, jnp.arange(num_samples))

    def mean_se(a):
        return jnp.mean(a, 0), jnp.std(a, 0, ddof=1) / jnp.sqrt(num_samples)

    nngp, nngp_se = mean_se(nngps)
    ntk, ntk_se = mean_se(ntks) if compute_ntk else (None, None)
    return MonteCarloKernel(nngp, ntk, nngp_se, ntk_se, num_samples)


__all__ = ["MonteCarloKernel", "empirical_ntk", "monte_carlo_kernel"]
