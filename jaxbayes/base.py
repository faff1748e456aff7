"""The one algorithm contract of jaxbayes, its non-finite guard, and the one loop that runs every algorithm.

Every iterative algorithm (Gaussian VI, BNN VI, SSVI, score-model training, deep kernel machines, GP
hyper-parameter fitting) is an :class:`Algorithm`, the shape of optax's ``GradientTransformation`` and
blackjax's ``SamplingAlgorithm``:

* ``state = alg.init(key, *inputs)``: ``key`` first (algorithms that draw nothing at init ignore it);
* ``state, info = alg.step(key, state, batch)``: one pure update; ``batch`` is ``None`` for full-data or
  data-free algorithms.

States and infos are ``NamedTuple``\\s documented field by field; every state counts its steps in ``state.step``.
The step logic lives in module-level functions with explicit arguments; a factory such as
``jaxbayes.vi.gaussian_vi(...)`` is a thin closure over them. Nothing is jitted inside: users compose
``jit``, ``vmap``, ``grad`` and sharding themselves. :func:`fit` runs any of them in one ``lax.scan``.

Non-finite updates (optax's ``apply_if_finite`` idea, shared by every optimiser-driven algorithm):
:func:`guarded_update` applies an optimiser update only when the gradient is finite, counts skipped steps in
``state.num_skipped`` and records the first bad step in ``state.nonfinite_step``. With ``nan_policy="raise"``
the state freezes at the last finite parameters and :func:`fit` raises ``FloatingPointError`` after its scan.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import optax

from jaxbayes._checks import check_choice, check_int_range, concrete_value
from jaxbayes.parallel import sample_keys, take_rows
from jaxbayes.typing import Array, PRNGKey, PyTree

NAN_POLICIES = ("skip", "raise")


class InitFn(Protocol):
    def __call__(self, key: PRNGKey, /, *inputs: Any) -> NamedTuple:
        """Build the initial state from a key and the algorithm's inputs (positions, parameters, data)."""


class StepFn(Protocol):
    def __call__(self, key: PRNGKey, state: NamedTuple, batch: PyTree = None, /) -> tuple[NamedTuple, NamedTuple]:
        """One pure update of ``state`` on ``batch`` (``None`` for full-data algorithms); returns ``(state, info)``."""


class Algorithm(NamedTuple):
    """An iterative algorithm: ``init(key, *inputs) -> state`` and ``step(key, state, batch) -> (state, info)``.

    Attributes:
      init: builds the state.
      step: one update; pure, not jitted.
      nan_policy: what :func:`fit` does after a non-finite step: ``"skip"`` (the step's update was dropped;
        go on) or ``"raise"`` (raise ``FloatingPointError`` naming the first such step).

    Families with more to offer keep ``init`` and ``step`` first and add fields (``sample``, ``predict``); they
    are still algorithms for :func:`fit`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxbayes.base import OptState, optimizer_algorithm, fit
      >>> alg = optimizer_algorithm(lambda p, k, b: jnp.sum((p - 3.0) ** 2), optax.sgd(0.1))
      >>> state, info = fit(jax.random.key(0), alg, alg.init(jax.random.key(1), jnp.zeros(2)), 100)
      >>> [round(float(v), 3) for v in state.params], int(state.step)
      ([3.0, 3.0], 100)
    """

    init: InitFn
    step: StepFn
    nan_policy: str = "skip"


def tree_all_finite(tree: PyTree) -> Array:
    """``True`` when every leaf of ``tree`` is finite (a scalar boolean array)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


def guarded_update(optimizer: optax.GradientTransformation, state: NamedTuple, grads: PyTree, value: Array,
                   nan_policy: str, *, field: str = "q") -> tuple[NamedTuple, Array]:
    """Apply ``optimizer``'s update of ``state.<field>`` for the loss gradient ``grads`` only when it is finite.

    ``state`` is any NamedTuple with fields ``<field>`` (the optimised pytree), ``opt_state``, ``step``,
    ``num_skipped`` and ``nonfinite_step``. With ``nan_policy="raise"`` the loss ``value`` must be finite
    too and no earlier step may have been non-finite; an eager call then raises ``FloatingPointError``.

    The update runs inside ``lax.cond``: selecting between old and new states with ``jnp.where`` made XLA
    split the finiteness check into one reduction per leaf and recompute the update in each (2x the step
    time on small models); only the parameters and optimiser state pass through the cond, since routing the
    counters through it as well doubled the full-rank VI step.

    Returns:
      ``(new_state, finite)`` with ``step`` incremented.
    """
    finite = tree_all_finite(grads)
    if nan_policy == "raise":
        finite = finite & jnp.isfinite(value)
        apply = finite & (state.nonfinite_step < 0)
    else:
        apply = finite

    def update(operands):
        params, opt_state = operands
        updates, new_opt = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_opt

    params, opt_state = jax.lax.cond(apply, update, lambda operands: operands,
                                     (getattr(state, field), state.opt_state))
    first = jnp.where((state.nonfinite_step < 0) & ~finite, state.step, state.nonfinite_step)
    new_state = state._replace(**{field: params}, opt_state=opt_state, step=state.step + 1,
                               num_skipped=state.num_skipped + (~finite).astype(jnp.int32),
                               nonfinite_step=first.astype(jnp.int32))
    if nan_policy == "raise":
        f = concrete_value(finite)
        if f is not None and not bool(f):
            raise FloatingPointError(f"non-finite objective or gradient at step {int(state.step)}")
    return new_state, finite


def raise_if_nonfinite(state: NamedTuple) -> None:
    """Raise ``FloatingPointError`` naming the first non-finite step recorded in ``state`` (when concrete)."""
    s = concrete_value(getattr(state, "nonfinite_step", None))
    if s is not None and int(s) >= 0:
        raise FloatingPointError(f"non-finite objective or gradient at step {int(s)}")


class OptState(NamedTuple):
    """State of :func:`optimizer_algorithm`.

    Attributes:
      params: the optimised pytree.
      opt_state: the optax state.
      step: steps taken (int32).
      num_skipped: steps whose update was dropped because the gradient was non-finite.
      nonfinite_step: first such step, ``-1`` if none.
    """

    params: PyTree
    opt_state: PyTree
    step: Array
    num_skipped: Array
    nonfinite_step: Array


class OptInfo(NamedTuple):
    """Per-step diagnostics of :func:`optimizer_algorithm`: the ``loss`` before the update, the gradient's
    global norm ``grad_norm``, and whether it was ``finite`` (the update was applied when it was)."""

    loss: Array
    grad_norm: Array
    finite: Array


def zero_counters() -> tuple[Array, Array, Array]:
    """``(step, num_skipped, nonfinite_step)`` of a fresh state: ``0, 0, -1`` as int32 scalars."""
    zero = jnp.zeros((), jnp.int32)
    return zero, zero, jnp.full((), -1, jnp.int32)


def optimizer_init(optimizer: optax.GradientTransformation, params: PyTree) -> OptState:
    """The :class:`OptState` of ``params`` before any step."""
    return OptState(params, optimizer.init(params), *zero_counters())


def optimizer_step(loss_fn: Callable[[PyTree, PRNGKey, PyTree], Array], optimizer: optax.GradientTransformation,
                   key: PRNGKey, state: OptState, batch: PyTree = None, *,
                   nan_policy: str = "skip") -> tuple[OptState, OptInfo]:
    """One guarded optimiser step on ``loss_fn(params, key, batch)``."""
    loss, grads = jax.value_and_grad(loss_fn)(state.params, key, batch)
    new_state, finite = guarded_update(optimizer, state, grads, loss, nan_policy, field="params")
    return new_state, OptInfo(loss, optax.tree.norm(grads), finite)


def optimizer_algorithm(loss_fn: Callable[[PyTree, PRNGKey, PyTree], Array],
                        optimizer: optax.GradientTransformation, *, nan_policy: str = "skip") -> Algorithm:
    """Minimise ``loss_fn(params, key, batch)`` with an optax optimiser, as an :class:`Algorithm`.

    ``init(key, params)`` (the key is unused) and ``step(key, state, batch)``. The building block of the
    score trainer and GP hyper-parameter fitting; see :class:`Algorithm` for an example.
    """
    check_choice("nan_policy", nan_policy, NAN_POLICIES)

    def init(key: PRNGKey, params: PyTree) -> OptState:
        del key
        return optimizer_init(optimizer, params)

    def step(key: PRNGKey, state: OptState, batch: PyTree = None) -> tuple[OptState, OptInfo]:
        return optimizer_step(loss_fn, optimizer, key, state, batch, nan_policy=nan_policy)

    return Algorithm(init, step, nan_policy)


def num_examples(data: PyTree) -> int:
    """The shared leading size of every array in ``data``."""
    sizes = {jnp.shape(x)[0] for x in jax.tree.leaves(data)}
    if len(sizes) != 1:
        raise ValueError(f"all data arrays must share one leading size, got {sorted(sizes)}")
    return sizes.pop()


def minibatch(key: PRNGKey, data: PyTree, batch_size: int) -> PyTree:
    """A uniformly random minibatch of ``batch_size`` distinct examples (leading axis) from ``data``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> minibatch(jax.random.key(0), (jnp.arange(10), jnp.ones((10, 2))), 4)[1].shape
      (4, 2)
    """
    n = num_examples(data)
    batch_size = check_int_range("batch_size", batch_size, 1)
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} is larger than the data set ({n} examples)")
    idx = jax.random.choice(key, n, (batch_size,), replace=False)
    return jax.tree.map(lambda x: take_rows(x, idx), data)


def fit(
    key: PRNGKey,
    alg: Algorithm,
    state: NamedTuple,
    num_steps: int,
    *,
    data: PyTree = None,
    batch_size: int | None = None,
    callback: Callable[[Array, NamedTuple], None] | None = None,
    callback_every: int = 100,
) -> tuple[NamedTuple, NamedTuple]:
    """Run ``num_steps`` steps of any :class:`Algorithm` in one ``lax.scan``; return the final state and the
    per-step infos stacked along a leading axis.

    Step ``t`` uses the key ``fold_in(key, state.step + t)``, so a fit split into several calls draws the same
    numbers as one call. With ``data`` and ``batch_size`` each step sees a fresh random minibatch of
    ``batch_size`` examples (split off the step's key); with ``data`` alone every step sees all of it.

    Args:
      key: root key of the run.
      alg: the algorithm.
      state: its state (from ``alg.init`` or an earlier fit).
      num_steps: number of steps.
      data: a pytree of arrays with a shared leading axis, or ``None``.
      batch_size: minibatch size (``None``: full data).
      callback: ``callback(step, info)`` on the host every ``callback_every`` steps (progress bars, logging);
        it runs through ``jax.debug.callback`` and so also under ``jit``.
      callback_every: steps between callbacks.

    Raises:
      FloatingPointError: naming the first non-finite step, when ``alg.nan_policy == "raise"``.
    """
    num_steps = check_int_range("num_steps", num_steps, 1)
    callback_every = check_int_range("callback_every", callback_every, 1)
    if batch_size is not None:
        if data is None:
            raise ValueError("batch_size needs data")
        n = num_examples(data)
        batch_size = check_int_range("batch_size", batch_size, 1)
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} is larger than the data set ({n} examples)")
    keys = sample_keys(key, num_steps, start=getattr(state, "step", 0))

    def body(st, k):
        if batch_size is not None:
            kb, k = jax.random.split(k)
            batch = minibatch(kb, data, batch_size)
        else:
            batch = data
        new, info = alg.step(k, st, batch)
        if callback is not None:
            done = getattr(new, "step", None)
            jax.lax.cond(done % callback_every == 0, lambda: jax.debug.callback(callback, done, info),
                         lambda: None)
        return new, info

    state, infos = jax.lax.scan(body, state, keys)
    if getattr(alg, "nan_policy", "skip") == "raise":
        raise_if_nonfinite(state)
    return state, infos


__all__ = [
    "NAN_POLICIES",
    "Algorithm",
    "InitFn",
    "OptInfo",
    "OptState",
    "StepFn",
    "fit",
    "guarded_update",
    "minibatch",
    "num_examples",
    "optimizer_algorithm",
    "optimizer_init",
    "optimizer_step",
    "raise_if_nonfinite",
    "tree_all_finite",
    "zero_counters",
]
