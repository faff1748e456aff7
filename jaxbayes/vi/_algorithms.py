"""Gaussian VI as init/step/sample algorithms over a ``logdensity_fn`` with any optax optimiser.

``alg = meanfield_vi(logdensity_fn, optax.adam(1e-2))``; ``state = alg.init(position)``;
``state, info = alg.step(key, state, batch)``; ``draws = alg.sample(key, state, 100)``.

Each step draws ``num_samples`` reparameterised samples, estimates the objective of
:func:`jaxbayes.vi.objective_terms` (ELBO with sticking-the-landing gradients by default, or the Renyi bound),
and applies the optimiser's update to the variational parameters. The KL weight follows a linear warm-up
``beta_t = kl_weight * min(1, (t + 1) / warmup_steps)``.

Non-finite gradients never corrupt the state: the update is dropped and the step number of the first such
event is kept in ``state.nonfinite_step``. With ``nan_policy="skip"`` training continues (the count is in
``state.num_skipped``); with ``nan_policy="raise"`` a non-finite objective counts too (so a log density that
turns NaN is reported even where its gradient stays finite), the state freezes at the last finite parameters,
an eager ``step`` raises ``FloatingPointError`` naming the step, and :func:`fit` raises after its scan.

Cost of the guard: the optimiser update runs inside a ``lax.cond`` on one finiteness flag of the gradient.
Selecting between the old and new state with ``jnp.where`` instead made XLA split the check into one reduction
per state leaf and recompute the update in each of them (2x the step time of an unguarded step on small
models); the ``cond`` costs about nothing. ``"skip"`` does not check the objective value: the gradient is what
updates the state, and the value alone would cost an extra forward pass of the log density whenever the
caller discards ``info`` (as a loop that only keeps the state does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxbayes._checks import check_choice, check_floating, check_int_range, check_positive, concrete_value
from jaxbayes.parallel import sample_keys
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree
from jaxbayes.vi._elbo import GaussianPrior, objective_terms
from jaxbayes.vi._families import fullrank_init, lowrank_init, meanfield_init


class VIState(NamedTuple):
    """State of a VI algorithm.

    Attributes:
      q: the variational family (its ``mean`` has the model's parameter structure).
      opt_state: the optax optimiser state.
      step: number of steps taken (int32 scalar).
      num_skipped: number of steps whose update was dropped because it was non-finite.
      nonfinite_step: step number of the first non-finite gradient (or objective, with ``nan_policy="raise"``),
        ``-1`` if none.
    """

    q: PyTree
    opt_state: PyTree
    step: Array
    num_skipped: Array
    nonfinite_step: Array


class VIInfo(NamedTuple):
    """Per-step diagnostics.

    Attributes:
      objective: the objective estimate (ELBO or Renyi bound) before the update.
      expected_loglik: Monte-Carlo mean of the (scaled) log-likelihood or log joint.
      kl: the KL term (negative entropy when no prior is given).
      kl_weight: the warm-up-adjusted KL weight used in this step.
      grad_norm: global norm of the gradient.
      finite: whether the gradient (and, with ``nan_policy="raise"``, the objective) was finite; the update was
        applied when it was.
    """

    objective: Array
    expected_loglik: Array
    kl: Array
    kl_weight: Array
    grad_norm: Array
    finite: Array


class VIAlgorithm(NamedTuple):
    """A VI algorithm: ``init(position) -> VIState``, ``step(key, state, batch=None) -> (VIState, VIInfo)``,
    ``sample(key, state, num) -> pytree of draws`` (leading axis ``num``), and its ``nan_policy``."""

    init: Callable
    step: Callable
    sample: Callable
    nan_policy: str = "skip"


def _tree_all_finite(tree: PyTree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


def guarded_update(optimizer: optax.GradientTransformation, state: VIState, grads: PyTree, value: Array,
                   nan_policy: str) -> tuple[VIState, Array]:
    """Apply the optimiser's update for the ascent gradient ``-grads`` only if ``grads`` are finite (for
    ``nan_policy="raise"`` also ``value``, and only while no earlier step was non-finite); record the first bad
    step.

    ``grads`` are gradients of the *loss* (negative objective). Shared by all VI algorithms in this package.
    The update runs inside ``lax.cond`` so a skipped step costs nothing and a taken one costs no more than an
    unguarded update (see the module docstring).
    """
    finite = _tree_all_finite(grads)
    if nan_policy == "raise":
        finite = finite & jnp.isfinite(value)
        apply = finite & (state.nonfinite_step < 0)
    else:
        apply = finite

    def update(operands):
        q, opt_state = operands
        updates, new_opt = optimizer.update(grads, opt_state, q)
        return optax.apply_updates(q, updates), new_opt

    # Only q and the optimiser state pass through the cond: routing the skip counters through it as well
    # (updating them in the skip branch) doubled the full-rank step time on small models.
    q, opt_state = jax.lax.cond(apply, update, lambda operands: operands, (state.q, state.opt_state))
    first = jnp.where((state.nonfinite_step < 0) & ~finite, state.step, state.nonfinite_step)
    new_state = state._replace(q=q, opt_state=opt_state, step=state.step + 1,
                               num_skipped=state.num_skipped + (~finite).astype(jnp.int32),
                               nonfinite_step=first.astype(jnp.int32))
    if nan_policy == "raise":
        f = concrete_value(finite)
        if f is not None and not bool(f):
            raise FloatingPointError(f"non-finite VI objective or gradient at step {int(state.step)}")
    return new_state, finite


def gaussian_vi(
    logdensity_fn: Callable,
    optimizer: optax.GradientTransformation,
    *,
    family: str = "meanfield",
    rank: int = 1,
    init_scale: ArrayLike = 0.1,
    num_samples: int = 1,
    stl: bool = True,
    objective: str = "elbo",
    alpha: ArrayLike = 0.0,
    prior: GaussianPrior | Callable | None = None,
    num_data: int | None = None,
    kl_weight: ArrayLike = 1.0,
    warmup_steps: int = 0,
    temperature: ArrayLike = 1.0,
    nan_policy: str = "skip",
) -> VIAlgorithm:
    """Build a Gaussian VI algorithm (mean-field, low-rank + diagonal or full-rank).

    Args:
      logdensity_fn: ``theta -> scalar`` or ``(theta, batch) -> scalar``: the unnormalised log posterior when
        ``prior`` is ``None``, else the log-likelihood; with ``num_data`` it returns per-example
        log-likelihoods ``(B,)`` of the minibatch, scaled by ``N / B``.
      optimizer: any optax gradient transformation (the algorithm ascends the objective).
      family: ``"meanfield"``, ``"lowrank"`` or ``"fullrank"``.
      rank: rank of the low-rank factor (``family="lowrank"``).
      init_scale: initial standard deviation(s) of ``q``.
      num_samples: Monte-Carlo draws per step.
      stl: sticking-the-landing gradient (default on; ELBO only).
      objective: ``"elbo"`` or ``"renyi"`` (with ``alpha`` in ``[0, 1)``; ``0`` = importance weighted).
      prior: ``None``, a :class:`GaussianPrior` (closed-form KL) or a log-prior callable.
      num_data: total number of examples when steps see minibatches.
      kl_weight: final KL weight ``beta``.
      warmup_steps: linear KL warm-up length (0 = none).
      temperature: likelihood temperature ``T`` (cold posterior for ``T < 1``).
      nan_policy: ``"skip"`` drops updates with a non-finite gradient and continues; ``"raise"`` stops at the
        first non-finite gradient or objective (eagerly with ``FloatingPointError``; under ``jit`` the state
        freezes and :func:`fit` raises).

    Returns:
      A :class:`VIAlgorithm`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> logp = lambda t: -0.5 * jnp.sum((t - 3.0) ** 2 / 4.0)      # N(3, 2^2)
      >>> alg = gaussian_vi(logp, optax.adam(5e-2), family="meanfield", num_samples=4)
      >>> state, info = fit(jax.random.key(0), alg, alg.init(jnp.zeros(2)), 1000)
      >>> [round(float(v), 1) for v in state.q.mean], [round(float(v), 1) for v in state.q.scale()]
      ([3.0, 3.0], [2.0, 2.0])
    """
    check_choice("family", family, ("meanfield", "lowrank", "fullrank"))
    check_choice("nan_policy", nan_policy, ("skip", "raise"))
    check_choice("objective", objective, ("elbo", "renyi"))
    num_samples = check_int_range("num_samples", num_samples, 1)
    warmup_steps = check_int_range("warmup_steps", warmup_steps, 0)
    rank = check_int_range("rank", rank, 1)
    check_positive("init_scale", init_scale)
    check_positive("temperature", temperature)
    check_positive("kl_weight", kl_weight, strict=False)
    if num_data is not None:
        num_data = check_int_range("num_data", num_data, 1)
    if objective == "renyi":
        a = concrete_value(alpha)
        if a is not None and not (0.0 <= float(a) < 1.0):
            raise ValueError(f"alpha must be in [0, 1), got {float(a)}")
    options = dict(num_samples=num_samples, stl=stl, objective=objective, alpha=alpha, prior=prior,
                   num_data=num_data, temperature=temperature)

    def init(position: PyTree, *, key: PRNGKey | None = None, batch: PyTree = None) -> VIState:
        """Centre ``q`` on ``position``; checks ``logdensity_fn`` is finite there (when data allows)."""
        leaves = jax.tree.leaves(position)
        if not leaves:
            raise ValueError("position must be a non-empty pytree of arrays")
        for leaf in leaves:
            check_floating("position", leaf)
        if num_data is None:
            value = logdensity_fn(position) if batch is None else logdensity_fn(position, batch)
            if jnp.ndim(value) != 0:
                raise ValueError(f"logdensity_fn must return a scalar, got shape {jnp.shape(value)}")
            v = concrete_value(value)
            if v is not None and not jnp.isfinite(v):
                raise ValueError(f"logdensity_fn is not finite at the initial position (got {float(v)}); "
                                 "start from a point of positive density")
        if family == "meanfield":
            q = meanfield_init(position, init_scale=init_scale)
        elif family == "fullrank":
            q = fullrank_init(position, init_scale=init_scale)
        else:
            q = lowrank_init(jax.random.key(0) if key is None else key, position, rank=rank,
                             init_scale=init_scale)
        zero = jnp.zeros((), jnp.int32)
        return VIState(q, optimizer.init(q), zero, zero, jnp.full((), -1, jnp.int32))

    def step(key: PRNGKey, state: VIState, batch: PyTree = None) -> tuple[VIState, VIInfo]:
        """One optimiser step on a fresh Monte-Carlo estimate of the objective."""
        expected = jax.tree.structure(jax.eval_shape(optimizer.init, state.q))
        if expected != jax.tree.structure(state.opt_state):
            raise ValueError("the parameter pytree structure changed since init: q has structure "
                             f"{jax.tree.structure(state.q.mean)}, which does not match the optimiser state; "
                             "call alg.init again for a new parameter structure")
        if warmup_steps:
            beta = kl_weight * jnp.minimum(1.0, (state.step + 1) / warmup_steps)
        else:
            beta = jnp.asarray(kl_weight, jnp.result_type(float))

        def loss(q):
            terms = objective_terms(key, q, logdensity_fn, batch, kl_weight=beta, **options)
            return -terms.value, terms

        (_, terms), grads = jax.value_and_grad(loss, has_aux=True)(state.q)
        new_state, finite = guarded_update(optimizer, state, grads, terms.value, nan_policy)
        info = VIInfo(terms.value, terms.expected_loglik, terms.kl, beta, optax.tree.norm(grads), finite)
        return new_state, info

    def sample(key: PRNGKey, state: VIState, num: int) -> PyTree:
        """``num`` draws from the current ``q``, stacked along a new leading axis."""
        return state.q.sample(key, num)

    return VIAlgorithm(init, step, sample, nan_policy)


def meanfield_vi(logdensity_fn: Callable, optimizer: optax.GradientTransformation, **options) -> VIAlgorithm:
    """Mean-field Gaussian VI: :func:`gaussian_vi` with ``family="meanfield"`` (same keyword options)."""
    return gaussian_vi(logdensity_fn, optimizer, family="meanfield", **options)


def lowrank_vi(logdensity_fn: Callable, optimizer: optax.GradientTransformation, *, rank: int,
               **options) -> VIAlgorithm:
    """Low-rank + diagonal Gaussian VI: :func:`gaussian_vi` with ``family="lowrank"``."""
    return gaussian_vi(logdensity_fn, optimizer, family="lowrank", rank=rank, **options)


def fullrank_vi(logdensity_fn: Callable, optimizer: optax.GradientTransformation, **options) -> VIAlgorithm:
    """Full-rank Gaussian VI: :func:`gaussian_vi` with ``family="fullrank"`` (same keyword options)."""
    return gaussian_vi(logdensity_fn, optimizer, family="fullrank", **options)


def minibatch(key: PRNGKey, data: PyTree, batch_size: int) -> PyTree:
    """A uniformly random minibatch of ``batch_size`` distinct examples (leading axis) from ``data``."""
    n = _num_examples(data)
    batch_size = check_int_range("batch_size", batch_size, 1)
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} is larger than the data set ({n} examples)")
    idx = jax.random.choice(key, n, (batch_size,), replace=False)
    return jax.tree.map(lambda x: jnp.asarray(x)[idx], data)


def _num_examples(data: PyTree) -> int:
    sizes = {jnp.shape(x)[0] for x in jax.tree.leaves(data)}
    if len(sizes) != 1:
        raise ValueError(f"all data arrays must share one leading size, got {sorted(sizes)}")
    return sizes.pop()


def fit(
    key: PRNGKey,
    alg: VIAlgorithm,
    state: VIState,
    num_steps: int,
    *,
    data: PyTree = None,
    batch_size: int | None = None,
) -> tuple[VIState, VIInfo]:
    """Run ``num_steps`` steps of ``alg`` (any algorithm here: VI, BNN, SSVI) in a ``lax.scan``.

    Returns the final state and the stacked per-step infos.

    Step ``t`` uses the key ``fold_in(key, state.step + t)``. With ``data`` and ``batch_size`` each step sees a
    fresh random minibatch; with ``data`` alone every step sees all of it. Raises ``FloatingPointError`` with
    the step number if the algorithm was built with ``nan_policy="raise"`` and a step was non-finite.
    """
    num_steps = check_int_range("num_steps", num_steps, 1)
    if batch_size is not None:
        if data is None:
            raise ValueError("batch_size needs data")
        n = _num_examples(data)
        batch_size = check_int_range("batch_size", batch_size, 1)
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} is larger than the data set ({n} examples)")
    keys = sample_keys(key, num_steps, start=state.step)

    def body(st, k):
        if batch_size is not None:
            kb, k = jax.random.split(k)
            batch = minibatch(kb, data, batch_size)
        else:
            batch = data
        return alg.step(k, st, batch)

    state, infos = jax.lax.scan(body, state, keys)
    if alg.nan_policy == "raise":
        raise_if_nonfinite(state)
    return state, infos


def raise_if_nonfinite(state: VIState) -> None:
    """Raise ``FloatingPointError`` naming the first non-finite step recorded in ``state`` (when concrete)."""
    s = concrete_value(state.nonfinite_step)
    if s is not None and int(s) >= 0:
        raise FloatingPointError(f"non-finite VI objective or gradient at step {int(s)}")


__all__ = [
    "VIAlgorithm",
    "VIInfo",
    "VIState",
    "fit",
    "fullrank_vi",
    "gaussian_vi",
    "lowrank_vi",
    "meanfield_vi",
    "minibatch",
    "raise_if_nonfinite",
]
