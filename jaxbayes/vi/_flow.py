"""A normalizing-flow variational family: rational-quadratic spline couplings from distrax.

``q`` is the push-forward of ``N(0, I_d)`` through ``num_layers`` masked couplings (Dinh et al., 2017) whose
elementwise bijection is a monotone rational-quadratic spline with ``num_bins`` bins on ``[-B, B]`` (identity
outside; Durkan et al., 2019, "Neural Spline Flows"), followed by an elementwise affine map ``m + s * z``:

    theta = m + s * (T_L o ... o T_1)(z),   z ~ N(0, I),
    log q(theta) = log N(z; 0, I) - sum_l log|det dT_l/dz| - sum_i log s_i.

Each coupling keeps half of the coordinates (alternating masks) and feeds them to an MLP conditioner that
outputs the spline parameters of the other half (``3 num_bins + 1`` per coordinate). The conditioners'
output layers start at zero, which makes every spline the identity, so ``q`` starts as
``N(position, init_scale^2 I)``, the mean-field Gaussian the other families start from; training then bends
it. Sampling is reparameterised (gradients reach every parameter) and ``log_prob`` inverts the couplings.
The objectives take ``log q`` of their draws from the forward pass (:meth:`FlowNormal.sample_and_log_prob`),
so the ELBO's gradient is the plain reparameterisation gradient (sticking-the-landing would need the spline
inverse, see there). A flow has no closed-form entropy or KL: the objectives use their Monte-Carlo forms
(``E_q[log q]``, and ``E_q[log q - log p_0]`` for a :class:`GaussianPrior`).

The MLPs are written out (a list of ``(W, b)``) rather than as flax modules so that ``q`` is a plain pytree
of arrays that optax updates and ``jit``/``vmap`` pass through; distrax supplies the spline, the coupling and
the chain, with their inverses and log-determinants.

Example:
  >>> import jax, jax.numpy as jnp
  >>> q = Flow(num_layers=2, hidden_sizes=(8,)).init(jax.random.key(0), {"x": jnp.zeros(2)}, init_scale=1.0)
  >>> round(float(q.log_prob({"x": jnp.zeros(2)})), 4)   # starts as N(0, I): -log(2 pi)
  -1.8379
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxbayes._checks import check_int_range, check_positive
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree
from jaxbayes.vi._family import VariationalFamily


def _mlp(layers: list[tuple[Array, Array]], h: Array) -> Array:
    for w, b in layers[:-1]:
        h = jax.nn.gelu(h @ w + b)
    w, b = layers[-1]
    return h @ w + b


@functools.partial(jax.tree_util.register_dataclass, data_fields=["loc", "log_scale", "couplings"],
                   meta_fields=["structure", "num_bins", "range_max"])
@dataclasses.dataclass(frozen=True)
class FlowNormal:
    """The flow distribution ``q`` over a parameter pytree (see the module docstring).

    Attributes:
      loc: ``(d,)`` shift ``m`` of the final affine map.
      log_scale: ``(d,)`` log of its scale ``s``.
      couplings: per coupling layer, the conditioner MLP's ``[(W, b), ...]``.
      structure: (static) the parameter pytree's tree definition and leaf shapes and dtypes.
      num_bins, range_max: (static) the spline's bins and half-width ``B``.
    """

    loc: Array
    log_scale: Array
    couplings: tuple
    structure: Any
    num_bins: int
    range_max: float

    def to_distrax(self) -> Any:
        """The flow as a ``distrax.Transformed`` distribution over the flattened parameters."""
        import distrax

        d = self.loc.shape[0]
        spline = functools.partial(distrax.RationalQuadraticSpline, range_min=-self.range_max,
                                   range_max=self.range_max)
        layers = []
        for i, mlp in enumerate(self.couplings):
            mask = jnp.arange(d) % 2 == i % 2 if d > 1 else jnp.zeros(1, bool)  # d = 1: an unconditional spline

            def conditioner(x, mlp=mlp):
                return _mlp(mlp, x).reshape(*x.shape, 3 * self.num_bins + 1)

            layers.append(distrax.MaskedCoupling(mask=mask, conditioner=conditioner, bijector=spline))
        affine = distrax.Block(distrax.ScalarAffine(shift=self.loc, log_scale=self.log_scale), 1)
        base = distrax.MultivariateNormalDiag(jnp.zeros(d, self.loc.dtype), jnp.ones(d, self.loc.dtype))
        return distrax.Transformed(base, distrax.Chain([affine, *reversed(layers)]))

    def _unravel(self, flat: Array) -> PyTree:
        treedef, leaves = self.structure
        sizes = [math.prod(shape) for shape, _ in leaves]
        parts = jnp.split(flat, list(itertools.accumulate(sizes))[:-1], axis=-1)
        return jax.tree.unflatten(treedef, [p.reshape(*flat.shape[:-1], *shape).astype(dtype)
                                            for p, (shape, dtype) in zip(parts, leaves, strict=True)])

    def sample(self, key: PRNGKey, num: int | None = None) -> PyTree:
        """Reparameterised draws: one parameter pytree, or ``num`` stacked along a new leading axis."""
        if num is not None:
            check_int_range("num", num, 1)
        flat = self.to_distrax().sample(seed=key, sample_shape=() if num is None else (num,))
        return self._unravel(flat)

    def sample_and_log_prob(self, key: PRNGKey, num: int) -> tuple[PyTree, Array]:
        """``num`` reparameterised draws and their ``log q`` from the forward pass (the log-determinants of
        the couplings at the draws; no inverse). The objectives use this path for flows: the spline inverse
        is a root of a quadratic, and its float32 rounding near steep or narrow bins, fed back as a
        sticking-the-landing gradient, made training collapse (measured on the banana target); the plain
        reparameterisation gradient through the forward log-determinant is exact."""
        check_int_range("num", num, 1)
        flat, log_q = self.to_distrax().sample_and_log_prob(seed=key, sample_shape=(num,))
        return self._unravel(flat), log_q

    def log_prob(self, theta: PyTree) -> Array:
        """``log q(theta)`` of one parameter pytree (the couplings inverted exactly)."""
        if jax.tree.structure(theta) != self.structure[0]:
            raise ValueError(f"theta must have the parameters' structure {self.structure[0]}, "
                             f"got {jax.tree.structure(theta)}")
        return self.to_distrax().log_prob(ravel_pytree(theta)[0])


@dataclasses.dataclass(frozen=True)
class Flow(VariationalFamily):
    """The normalizing-flow family (spline couplings; module docstring): builds a :class:`FlowNormal`.

    Args:
      num_layers: coupling layers (>= 1; alternate halves of the coordinates are transformed).
      num_bins: spline bins per coordinate (>= 2).
      hidden_sizes: the conditioner MLPs' hidden widths.
      range_max: the spline acts on ``[-range_max, range_max]`` of the standardised coordinates.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> q = Flow().init(jax.random.key(0), jnp.zeros(3))
      >>> q.sample(jax.random.key(1), 5).shape
      (5, 3)
    """

    num_layers: int = 4
    num_bins: int = 8
    hidden_sizes: tuple[int, ...] = (32, 32)
    range_max: float = 5.0

    distribution = FlowNormal

    def __post_init__(self):
        check_int_range("num_layers", self.num_layers, 1)
        check_int_range("num_bins", self.num_bins, 2)
        for h in self.hidden_sizes:
            check_int_range("hidden_sizes", h, 1)
        check_positive("range_max", self.range_max)

    def init(self, key: PRNGKey, position: PyTree, init_scale: ArrayLike = 0.1) -> FlowNormal:
        """``q`` = ``N(position, init_scale^2 I)`` (identity splines), conditioners' hidden layers random."""
        check_positive("init_scale", init_scale)
        flat, _ = ravel_pytree(position)
        leaves = jax.tree.leaves(position)
        structure = (jax.tree.structure(position),
                     tuple((tuple(jnp.shape(x)), jnp.result_type(x)) for x in leaves))
        d, dtype = flat.shape[0], flat.dtype
        sizes = [d, *self.hidden_sizes, d * (3 * self.num_bins + 1)]
        couplings = []
        for layer_key in jax.random.split(key, self.num_layers):
            keys = jax.random.split(layer_key, len(sizes) - 1)
            mlp = [(jax.random.normal(k, (a, b), dtype) / math.sqrt(a), jnp.zeros(b, dtype))
                   for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)]
            mlp[-1] = (jnp.zeros_like(mlp[-1][0]), mlp[-1][1])  # zero output layer: identity splines
            couplings.append(mlp)
        log_scale = jnp.full(d, jnp.log(jnp.asarray(init_scale, dtype)), dtype)
        return FlowNormal(flat, log_scale, tuple(couplings), structure, self.num_bins, float(self.range_max))


__all__ = ["Flow", "FlowNormal"]
