"""Top-k and sparse simplex projections against POT and numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import ot as pot
import pytest

from jaxbayes import ot


def test_sparse_simplex_projection_matches_pot(x64):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 9))
    for k in (1, 3, 9):
        ours = ot.sparse_simplex_projection(x, k, radius=2.0)
        ref = pot.utils.projection_sparse_simplex(x.T / 2.0, k, axis=0).T * 2.0
        np.testing.assert_allclose(ours, ref, atol=1e-12)
        assert np.all((np.asarray(ours) > 0).sum(1) <= k)
    # derivative of the projection on the support: identity minus averaging over the support
    jac = jax.jacobian(lambda v: ot.sparse_simplex_projection(v, 3))(jnp.asarray(x[0]))
    support = np.asarray(ot.sparse_simplex_projection(x[0], 3)) > 0
    s = support.sum()
    want = np.zeros((9, 9))
    want[np.ix_(support, support)] = np.eye(s) - 1.0 / s
    np.testing.assert_allclose(jac, want, atol=1e-12)


@pytest.mark.parametrize("k", [2, 20])
def test_top_k_and_top_k_positive_match_numpy(k):
    rng = np.random.default_rng(4)
    s = rng.normal(size=(5, 30)).astype(np.float32)
    vals, idx = ot.top_k(jnp.asarray(s), k)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_array_equal(vals, np.take_along_axis(s, order, 1))
    pos, pidx = ot.top_k_positive(jnp.asarray(s), k)
    np.testing.assert_array_equal(pos, np.maximum(np.take_along_axis(s, order, 1), 0.0))
    np.testing.assert_array_equal(pidx, order)
    full, fidx = ot.top_k_positive(jnp.asarray(s), 30)  # k >= n: all entries, in place
    np.testing.assert_array_equal(full, np.maximum(s, 0.0))
    np.testing.assert_array_equal(fidx, np.broadcast_to(np.arange(30), s.shape))
