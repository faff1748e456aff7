"""Old OT names keep working for one release, with a DeprecationWarning, and give the new values."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes import ot

C = jnp.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])


def test_sinkhorn_threshold_is_tol():
    new = ot.sinkhorn(C, tol=1e-6)
    with pytest.warns(DeprecationWarning, match="'threshold' was renamed 'tol'"):
        old = ot.sinkhorn(C, threshold=1e-6)
    np.testing.assert_array_equal(old.f, new.f)
    with pytest.raises(TypeError, match="both"):
        ot.sinkhorn(C, threshold=1e-6, tol=1e-6)


def test_sparse_ot_old_fields():
    out = ot.sparse_ot(C, k=1, gamma=0.01)
    for old, new in (("alpha", out.f), ("beta", out.g), ("dual_cost", out.cost), ("grad_norm", out.error)):
        with pytest.warns(DeprecationWarning, match=f"SparseOTOutput.{old} was renamed"):
            np.testing.assert_array_equal(getattr(out, old), new)


def test_partial_and_divergence_share_the_vocabulary():
    part = ot.partial_ot(C, mass=0.5, epsilon=1e-3)
    np.testing.assert_allclose(part.transport_cost, jnp.sum(part.plan() * C), rtol=1e-6)
    assert part.f.shape == (3,) and part.g.shape == (3,) and bool(part.converged)
    x = jnp.linspace(0.0, 1.0, 8)[:, None]
    div = ot.sinkhorn_divergence(x, x + 0.5)
    assert float(div.cost) == float(div.divergence)
    assert int(div.n_iters) == max(int(div.xy.n_iters), int(div.xx.n_iters), int(div.yy.n_iters))
