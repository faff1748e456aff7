"""The flax score networks: single and batched calls agree."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes.sde.nets import ScoreMLP, SmallUNet


def test_networks_shapes_single_and_batched():
    mlp = ScoreMLP(hidden=(16, 16))
    p = mlp.init(jax.random.key(0), jnp.zeros(3), 0.5)
    np.testing.assert_allclose(jax.vmap(lambda x, t: mlp.apply(p, x, t))(jnp.ones((4, 3)), jnp.full(4, 0.3)),
                               mlp.apply(p, jnp.ones((4, 3)), jnp.full(4, 0.3)), rtol=1e-5, atol=1e-6)
    unet = SmallUNet(channels=(4, 8, 8), groups=2)
    # Deterministic stand-in weights (random init only costs compile time); conv weights fit any image size.
    shapes = jax.eval_shape(unet.init, jax.random.key(0), jnp.zeros((8, 8, 1)), 0.5)
    q = jax.tree.map(lambda a: 0.1 * jnp.cos(jnp.arange(a.size, dtype=a.dtype)).reshape(a.shape), shapes)
    for shape in ((8, 8, 1), (28, 28, 1)):
        single = jax.jit(unet.apply)(q, jnp.ones(shape), 0.1)
        batch = jax.jit(unet.apply)(q, jnp.ones((2, *shape)), jnp.full(2, 0.1))
        assert single.shape == shape and batch.shape == (2, *shape)
        np.testing.assert_allclose(single, batch[0], rtol=1e-5, atol=1e-6)
