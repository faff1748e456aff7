"""Kronecker-factored (KFAC) Laplace curvature for the dense layers of a flax linen network.

For a dense layer ``s = a W + b`` the output Jacobian of one example with respect to the augmented weights
``M = [W; b]`` (``(in + 1) x out``, row-major) is ``a~ (x) B`` with ``a~ = [a, 1]`` the layer's input and
``B = df/ds`` the output's gradient with respect to the layer's pre-activation, so the layer's GGN block is
``sum_n (a~_n a~_n^T) (x) (B_n^T Lambda_n B_n)``. KFAC (Martens & Grosse, ICML 2015; Ritter, Botev & Barber,
ICLR 2018) replaces this sum of Kronecker products by one, ``A (x) G`` with ``A = sum_n a~_n a~_n^T`` and
``G = (1/n) sum_n B_n^T Lambda_n B_n`` (exact for one example), ignores the blocks between layers, and
eigendecomposes ``A`` and ``G`` separately: ``A (x) G + delta I`` has eigenvectors ``Q_A (x) Q_G`` and
eigenvalues ``l_A l_G^T + delta``. The inputs ``a`` and gradients ``B`` come from ``flax.linen.intercept_methods``
around every ``Dense`` call.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxbayes.typing import Array, PyTree
from jaxbayes.vi._laplace_likelihoods import output_precision
from jaxbayes.vi._laplace_structure import LaplaceProblem, LaplaceStructure, sum_over_examples
from jaxbayes.vi._tree_paths import get_path, set_path


class DenseLayer(NamedTuple):
    """A dense layer of the network: its parameter ``path``, ``in_features``, ``features`` and ``use_bias``."""

    path: tuple[str, ...]
    in_features: int
    features: int
    use_bias: bool


class KFACCurvature(NamedTuple):
    """Per dense layer (tuples in the order of :attr:`LaplaceKFAC.layers`): the factors ``A`` (input side,
    ``(in + 1) x (in + 1)`` with a bias) and ``G`` (output side, ``out x out``) and their eigendecompositions."""

    a: tuple[Array, ...]
    g: tuple[Array, ...]
    a_eigenvalues: tuple[Array, ...]
    a_eigenvectors: tuple[Array, ...]
    g_eigenvalues: tuple[Array, ...]
    g_eigenvectors: tuple[Array, ...]


def _is_dense_call(context) -> bool:
    return isinstance(context.module, nn.Dense) and context.method_name == "__call__"


def dense_layers(module: nn.Module, params: PyTree, x_one: Array) -> tuple[DenseLayer, ...]:
    """The ``Dense`` layers ``module`` calls on one example, in call order (each must be called once)."""
    found: list[DenseLayer] = []

    def interceptor(next_fun, args, kwargs, context):
        if _is_dense_call(context):
            found.append(DenseLayer(tuple(context.module.path), int(args[0].shape[-1]),
                                    int(context.module.features), bool(context.module.use_bias)))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda p, xi: module.apply({"params": p}, xi[None]), params, x_one)
    paths = [layer.path for layer in found]
    if not found:
        raise ValueError("the module calls no flax.linen.Dense layer")
    if len(set(paths)) != len(paths):
        raise ValueError(f"a Dense layer is called more than once (weight sharing); KFAC needs one call each: {paths}")
    return tuple(found)


@dataclasses.dataclass(frozen=True)
class LaplaceKFAC(LaplaceStructure):
    """KFAC curvature (GGN-based) over the dense layers of a flax linen MLP; every parameter must belong to one.

    ``layers`` is found from the module when the posterior is built (leave it empty). The structure's
    coordinates are, layer after layer, the augmented weights ``[kernel; bias]`` raveled row-major.
    """

    layers: tuple[DenseLayer, ...] = ()

    def resolve(self, problem, params):
        if not isinstance(problem.module, nn.Module):
            raise ValueError("KFAC needs the model as a flax linen module (it intercepts the Dense layers)")
        layers = dense_layers(problem.module, params, problem.x[0])
        covered = sum((layer.in_features + layer.use_bias) * layer.features for layer in layers)
        total = sum(p.size for p in jax.tree.leaves(params))
        if covered != total:
            raise ValueError(f"KFAC covers Dense layers only: they hold {covered} of the {total} parameters")
        return dataclasses.replace(self, layers=layers)

    def _matrices(self, params):
        out = []
        for layer in self.layers:
            p = get_path(params, layer.path)
            m = p["kernel"]
            out.append(jnp.concatenate([m, p["bias"][None]]) if layer.use_bias else m)
        return out

    def _split(self, v):
        """``(..., d)`` -> per layer ``(..., in + 1, out)``."""
        parts, start = [], 0
        for layer in self.layers:
            rows = layer.in_features + layer.use_bias
            size = rows * layer.features
            parts.append(v[..., start:start + size].reshape(v.shape[:-1] + (rows, layer.features)))
            start += size
        return parts

    def _join(self, parts):
        return jnp.concatenate([p.reshape(p.shape[:-2] + (-1,)) for p in parts], axis=-1)

    def select(self, params):
        return jnp.concatenate([m.ravel() for m in self._matrices(params)])

    def merge(self, params, flat):
        for layer, m in zip(self.layers, self._split(flat), strict=True):
            p = dict(get_path(params, layer.path))
            if layer.use_bias:
                p["kernel"], p["bias"] = m[:-1].astype(p["kernel"].dtype), m[-1].astype(p["bias"].dtype)
            else:
                p["kernel"] = m.astype(p["kernel"].dtype)
            params = set_path(params, layer.path, p)
        return params

    def fit(self, problem: LaplaceProblem, params):
        module, paths = problem.module, [layer.path for layer in self.layers]

        def forward(perturb, xi):
            inputs = {}

            def interceptor(next_fun, args, kwargs, context):
                if not _is_dense_call(context):
                    return next_fun(*args, **kwargs)
                path = tuple(context.module.path)
                inputs[path] = args[0].reshape(-1)
                return next_fun(*args, **kwargs) + perturb[path]

            with nn.intercept_methods(interceptor):
                f = module.apply({"params": params}, xi[None])
            return jnp.reshape(f, (-1,)), (jnp.reshape(f, (-1,)), inputs)

        zeros = {layer.path: jnp.zeros(layer.features, problem.x.dtype) for layer in self.layers}

        def per_example(xi, yi):
            grads, (f, inputs) = jax.jacrev(forward, has_aux=True)(zeros, xi)  # grads[path]: (C, out)
            lam = output_precision(problem.likelihood, f, problem.noise_scale)
            a_parts, g_parts = [], []
            for layer, path in zip(self.layers, paths, strict=True):
                a = inputs[path]
                if layer.use_bias:
                    a = jnp.concatenate([a, jnp.ones((1,), a.dtype)])
                a_parts.append(jnp.outer(a, a))
                g_parts.append(grads[path].T @ lam @ grads[path])
            return tuple(a_parts), tuple(g_parts)

        a, g = sum_over_examples(per_example, problem.x, problem.y, problem.batch_size)
        n = problem.x.shape[0]
        g = tuple(gi / n for gi in g)
        ea = [jnp.linalg.eigh(0.5 * (m + m.T)) for m in a]
        eg = [jnp.linalg.eigh(0.5 * (m + m.T)) for m in g]
        return KFACCurvature(tuple(a), g, tuple(e[0] for e in ea), tuple(e[1] for e in ea),
                             tuple(e[0] for e in eg), tuple(e[1] for e in eg))

    def rotate(self, curvature, v):
        return self._join([qa.T @ m @ qg for m, qa, qg in
                           zip(self._split(v), curvature.a_eigenvectors, curvature.g_eigenvectors, strict=True)])

    def unrotate(self, curvature, u):
        return self._join([qa @ m @ qg.T for m, qa, qg in
                           zip(self._split(u), curvature.a_eigenvectors, curvature.g_eigenvectors, strict=True)])

    def eigenvalues(self, curvature):
        return jnp.concatenate([jnp.outer(la, lg).ravel() for la, lg in
                                zip(curvature.a_eigenvalues, curvature.g_eigenvalues, strict=True)])

    def marginal_variance(self, curvature, prior_precision):
        parts = []
        for la, qa, lg, qg in zip(curvature.a_eigenvalues, curvature.a_eigenvectors, curvature.g_eigenvalues,
                                  curvature.g_eigenvectors, strict=True):
            parts.append(qa**2 @ (1.0 / (jnp.outer(la, lg) + prior_precision)) @ (qg**2).T)
        return self._join(parts)


__all__ = ["DenseLayer", "KFACCurvature", "LaplaceKFAC", "dense_layers"]
