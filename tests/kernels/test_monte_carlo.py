"""Finite-network kernels (_monte_carlo.py) and gram_kernel against independent computations: the empirical
NTK against a forward-mode Jacobian of the flattened parameters and the NTK parameterisation's closed form;
a precomputed Gram pushed through the remaining layers equals the whole network's kernel."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxbayes.kernels import Dense, Erf, ReLU, empirical_ntk, gram_kernel, serial


def test_empirical_ntk_equals_the_flattened_jacobian_product(x64):
    net = serial(Dense(8, 1.5, 0.1), Erf(), Dense(2, 1.0, 0.2))
    _, params = net.init_fn(jax.random.key(0), (4,))
    x1, x2 = jax.random.normal(jax.random.key(1), (5, 4)), jax.random.normal(jax.random.key(2), (3, 4))
    flat, unravel = ravel_pytree(params)
    j1 = jax.jacfwd(lambda p: net.apply_fn(unravel(p), x1))(flat)  # (5, 3, P)
    j2 = jax.jacfwd(lambda p: net.apply_fn(unravel(p), x2))(flat)
    expected = np.einsum("nop,mop->nm", np.asarray(j1), np.asarray(j2)) / 2
    np.testing.assert_allclose(empirical_ntk(net.apply_fn, params, x1, x2), expected, rtol=1e-12)
    np.testing.assert_allclose(empirical_ntk(net.apply_fn, params, x1),
                               np.einsum("nop,mop->nm", np.asarray(j1), np.asarray(j1)) / 2, rtol=1e-12)


def test_empirical_ntk_of_one_dense_layer_is_its_closed_form(x64):
    """NTK parameterisation ``f = W_std W x / sqrt(d) + b_std b``: the NTK is ``W_std^2 x.x' / d + b_std^2``
    for every draw of the parameters."""
    x = jax.random.normal(jax.random.key(3), (4, 6))
    for seed in (0, 1):
        _, params = Dense(2, 1.7, 0.4).init_fn(jax.random.key(seed), (6,))
        np.testing.assert_allclose(empirical_ntk(Dense(2, 1.7, 0.4).apply_fn, params, x),
                                   1.7**2 * np.asarray(x @ x.T) / 6 + 0.4**2, rtol=1e-12)


def test_a_precomputed_gram_continues_through_the_remaining_layers(x64):
    x = jax.random.normal(jax.random.key(4), (6, 3))
    first = Dense(1, 1.3, 0.2).kernel_fn(x)
    rest = serial(ReLU(), Dense(1, 1.0, 0.1))
    whole = serial(Dense(1, 1.3, 0.2), ReLU(), Dense(1, 1.0, 0.1)).kernel_fn(x)
    via_gram = rest.kernel_map(gram_kernel(first.nngp, jnp.diagonal(first.nngp)))  # kernel_map: Kernel -> Kernel
    np.testing.assert_allclose(via_gram.nngp, whole.nngp, rtol=1e-12)
