"""Combinators: :func:`serial` (composition), :func:`parallel`, :func:`FanOut`, :func:`FanInSum` (branches).

Branches with independent weights have additive kernels (Novak et al., "Neural Tangents", ICLR 2020).
"""

from __future__ import annotations

import jax

from jaxbayes._checks import check_int_range
from jaxbayes.kernels._kernel import Kernel, Layer, make_layer


def serial(*layers: Layer) -> Layer:
    """Compose layers left to right (``serial(Dense(), ReLU(), Dense())``).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbayes.kernels import Dense, Identity, ReLU
      >>> net = serial(Dense(512, W_std=1.5, b_std=0.1), ReLU(), Dense(1, W_std=1.5))
      >>> net.kernel_fn(jnp.ones((3, 2)), jnp.zeros((4, 2))).ntk.shape
      (3, 4)
    """
    if not layers:
        raise ValueError("serial needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"layers[{i}] must be a Layer, got {type(layer).__name__}")

    def init_fn(key, input_shape):
        params = []
        for i, layer in enumerate(layers):
            input_shape, p = layer.init_fn(jax.random.fold_in(key, i), input_shape)
            params.append(p)
        return input_shape, params

    def apply_fn(params, x):
        for layer, p in zip(layers, params, strict=True):
            x = layer.apply_fn(p, x)
        return x

    def kernel_map(k):
        for layer in layers:
            k = layer.kernel_map(k)
        return k

    # what the composition reads of its input: what its first non-pointwise layer reads
    spatial = next((layer.spatial for layer in layers if layer.spatial != "pointwise"), "pointwise")
    return make_layer(init_fn, apply_fn, kernel_map, spatial)


def parallel(*layers: Layer) -> Layer:
    """Apply ``layers[i]`` to the ``i``-th branch of a tuple input (use with :func:`FanOut`/:func:`FanInSum`).

    Example (a residual block):
      >>> import jax.numpy as jnp
      >>> from jaxbayes.kernels import Dense, Identity, ReLU
      >>> block = serial(FanOut(2), parallel(serial(ReLU(), Dense(8)), Identity()), FanInSum())
      >>> serial(Dense(8), block).kernel_fn(jnp.ones((2, 3))).nngp.shape
      (2, 2)
    """
    if not layers:
        raise ValueError("parallel needs at least one layer")

    def check(t):
        if not isinstance(t, tuple) or isinstance(t, Kernel) or len(t) != len(layers):
            raise ValueError(f"parallel of {len(layers)} layers needs a tuple of {len(layers)} branches")

    def init_fn(key, input_shapes):
        check(tuple(input_shapes) if isinstance(input_shapes, list) else input_shapes)
        outs = [layer.init_fn(jax.random.fold_in(key, i), s)
                for i, (layer, s) in enumerate(zip(layers, input_shapes, strict=True))]
        return tuple(o[0] for o in outs), [o[1] for o in outs]

    def apply_fn(params, xs):
        check(tuple(xs))
        return tuple(layer.apply_fn(p, x) for layer, p, x in zip(layers, params, xs, strict=True))

    def kernel_map(ks):
        check(ks)
        return tuple(layer.kernel_map(k) for layer, k in zip(layers, ks, strict=True))

    return make_layer(init_fn, apply_fn, kernel_map)


def FanOut(num: int) -> Layer:  # noqa: N802
    """Copy the input into a tuple of ``num`` branches."""
    num = check_int_range("num", num, 1)
    return make_layer(lambda key, shape: ((tuple(shape),) * num, {}), lambda params, x: (x,) * num,
                 lambda k: (k,) * num)


def FanInSum() -> Layer:  # noqa: N802
    """Sum a tuple of branches. Branches with independent weights have additive kernels (Novak et al.)."""

    def init_fn(key, input_shapes):
        shapes = {tuple(s) for s in input_shapes}
        if len(shapes) != 1:
            raise ValueError(f"FanInSum needs branches of one shape, got {sorted(shapes)}")
        return shapes.pop(), {}

    def apply_fn(params, xs):
        return sum(xs[1:], xs[0])

    def kernel_map(ks):
        if isinstance(ks, Kernel) or not isinstance(ks, tuple):
            raise ValueError("FanInSum needs a tuple of branches (use FanOut and parallel before it)")
        total = ks[0]
        for k in ks[1:]:
            total = Kernel(total.nngp + k.nngp, total.ntk + k.ntk, total.var1 + k.var1,
                           None if total.var2 is None else total.var2 + k.var2)
        return total

    return make_layer(init_fn, apply_fn, kernel_map)

__all__ = ["FanInSum", "FanOut", "parallel", "serial"]
