"""Structures: last-layer equals full on a model whose only parameters are the last layer; last-layer precision
is the full GGN's last-layer block; diagonal is the full curvature's diagonal; converters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxbayes import vi


class FixedFeatures(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(jnp.tanh(2.0 * x) + x**2)  # parameters: the last (only) dense layer


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="out")(jnp.tanh(nn.Dense(4, name="hidden")(x)))


def data(key, n=25):
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (n, 2)), jax.random.randint(ky, (n,), 0, 3)


def init64(module, x):
    return jax.tree.map(lambda p: p.astype(jnp.float64), module.init(jax.random.key(2), x[:1])["params"])


def test_last_layer_equals_full_when_only_the_last_layer_has_parameters(x64, key):
    module = FixedFeatures()
    x, y = data(key)
    params = init64(module, x)
    full = vi.laplace_posterior(module, params, x, y, structure="full", prior_precision=0.5, tol=1e-10)
    last = vi.laplace_posterior(module, params, x, y, structure="last_layer", prior_precision=0.5, tol=1e-10)
    assert last.structure.path == ("Dense_0",)
    np.testing.assert_allclose(last.covariance(), full.covariance(), atol=1e-12)
    np.testing.assert_allclose(last.log_evidence(), full.log_evidence(), atol=1e-10)
    np.testing.assert_allclose(last.log_evidence(3.0), full.log_evidence(3.0), atol=1e-10)
    hess = vi.laplace_posterior(module, params, x, y, structure=vi.LaplaceLastLayer("hessian"), prior_precision=0.5,
                                tol=1e-10)
    np.testing.assert_allclose(hess.covariance(), full.covariance(), atol=1e-10)  # GLM in the last layer


def test_last_layer_precision_is_the_full_ggn_block(x64, key):
    module = MLP()
    x, y = data(key)
    params = init64(module, x)
    full = vi.laplace_posterior(module, params, x, y, structure="full", optimizer=None)
    last = vi.laplace_posterior(module, params, x, y, structure="last_layer", optimizer=None)
    assert last.structure.path == ("out",)
    ggn = full.structure.unrotate(full.curvature, full.structure.rotate(full.curvature, np.eye(27))
                                  * full.eigenvalues)
    # ravel order: hidden (4 bias + 8 kernel), then out (3 bias + 12 kernel)
    block = ggn[12:, 12:]
    np.testing.assert_allclose(np.linalg.inv(last.covariance()) - np.eye(15), block, atol=1e-10)
    assert last.theta.shape == (15,)
    # an explicit path with a plain apply_fn gives the same
    apply = lambda p, xi: module.apply({"params": p}, xi[None])[0]
    by_path = vi.laplace_posterior(apply, params, x, y, structure=vi.LaplaceLastLayer(path=("out",)), optimizer=None)
    np.testing.assert_allclose(by_path.covariance(), last.covariance(), atol=1e-12)
    # the diagonal structure is the diagonal of the full GGN; samples move only the last layer
    diag = vi.laplace_posterior(module, params, x, y, structure="diag", optimizer=None)
    np.testing.assert_allclose(diag.eigenvalues, np.diag(ggn), atol=1e-10)
    draws = last.sample(key, 3)
    np.testing.assert_array_equal(draws["hidden"]["kernel"], np.broadcast_to(params["hidden"]["kernel"], (3, 2, 4)))
    assert not np.allclose(draws["out"]["kernel"][0], params["out"]["kernel"])
    assert ravel_pytree(params)[0].shape == (27,)


def test_as_structure():
    assert vi.as_structure("full") == vi.LaplaceFull()
    assert vi.as_structure("diag", curvature="hessian") == vi.LaplaceDiag("hessian")
    assert vi.as_structure("kfac") == vi.LaplaceKFAC()
    assert vi.as_structure("last_layer") == vi.LaplaceLastLayer()
    obj = vi.LaplaceLastLayer(path=("out",))
    assert vi.as_structure(obj) is obj
    assert sorted(vi.STRUCTURES) == ["diag", "full", "kfac", "last_layer"]
    hash(vi.LaplaceFull())  # static under jit
    import pytest

    with pytest.raises(ValueError, match="carries its own"):
        vi.as_structure(obj, curvature="ggn")
    with pytest.raises(TypeError):
        vi.as_structure(3)


def test_diag_structure_matches_the_old_diagonal_laplace_and_jits(x64, key):
    module = MLP()
    x, y = data(key)
    params = init64(module, x)
    apply = lambda p, xi: module.apply({"params": p}, xi[None])[0]
    old = vi.laplace(apply, params, x, prior_precision=2.0)
    new = vi.laplace_posterior(module, params, x, y, structure="diag", prior_precision=2.0, optimizer=None)
    var = new.structure.merge(params, new.marginal_variance())
    jax.tree.map(lambda ls, v: np.testing.assert_allclose(np.exp(2 * ls), v, rtol=1e-10), old.log_scale, var)
    build = lambda p: vi.laplace_posterior(module, p, x, y, structure="kfac", optimizer=None).log_evidence()
    np.testing.assert_allclose(jax.jit(build)(params), build(params), rtol=1e-10)
    tuned = vi.tune_prior_precision(new, grid=np.array([1e-3, 1e-2, 1e-1]))
    assert not bool(tuned.converged)  # the best grid point is an end of the grid: not bracketed
