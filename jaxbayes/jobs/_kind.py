"""What a pod-job kind provides, and what the runner hands it."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from jax.sharding import Mesh

from jaxbayes.jobs._config import Field
from jaxbayes.typing import PRNGKey, PyTree


class JobContext(NamedTuple):
    """Everything a job kind may use.

    Attributes:
      params: the validated ``[params]`` table of the job file.
      key: the job's root key, ``jax.random.key(seed)``; step ``i`` should use ``fold_in(key, i)`` so a
        resumed run draws the same numbers as an uninterrupted one.
      mesh: the global data mesh over every device of every process.
      output_dir: where results go; only process 0 writes files.
      is_main: ``True`` on process 0.
      cache: a dict that lives for the whole run, where a kind keeps what it builds once (loaded data,
        compiled step functions).
      data: the job's ``[data]`` (a :class:`jaxbayes.jobs.JobData`), or ``None`` for kinds that read none;
        iterators from ``data.batches(...)`` are checkpointed with the state.
      seed: the job's seed (the integer ``key`` was made from), e.g. for ``data.batches``.
    """

    params: Mapping[str, Any]
    key: PRNGKey
    mesh: Mesh
    output_dir: Path
    is_main: bool
    cache: dict
    data: Any = None
    seed: int = 0


class JobKind(NamedTuple):
    """A kind of pod job: a fixed number of deterministic steps over a state pytree of arrays.

    Attributes:
      name: the ``kind`` string of job files, ``"<pillar>.<what>"``.
      description: one line for listings.
      params: the schema of the ``[params]`` table.
      num_steps: ``num_steps(params) -> int``, or ``num_steps(params, data) -> int`` for a kind whose length
        depends on its data (``kernels.gram``: the number of tiles); see :func:`count_steps`.
      init: ``init(ctx) -> state``, a pytree of arrays (checkpointed with orbax).
      step: ``step(ctx, state, i) -> state`` for step index ``i``; must depend only on its inputs.
      finish: ``finish(ctx, state) -> dict`` of JSON-able metrics; on process 0 it may write PNGs into
        ``ctx.output_dir`` and list them under ``"figures"``.
      check: optional ``check(params) -> str | None`` for cross-field checks (data set names ...) run
        before anything else.
      check_data: optional ``check_data(params, data) -> str | None`` for checks that need the opened data.
      data: ``"none"`` (the kind reads no ``[data]`` table), ``"required"`` or ``"optional"``.
      summary: optional ``summary(params, data) -> str``: what the run will do and cost, printed at start-up.
      open_data: optional ``open_data(table, base_dir) -> data`` for a kind whose ``[data]`` table is not one
        data set (``ot.solve`` reads two point sets): it validates ``table`` itself (paths relative to
        ``base_dir``, the job file's folder; raise :class:`jaxbayes.jobs.JobConfigError` naming the key) and
        returns what ``ctx.data`` becomes, an object with ``table`` (the validated table, part of the run's
        fingerprint), ``summary(processes) -> str`` and ``iterators`` (a list, empty when it makes none).
      data_fields: the schema of such a kind's own ``[data]`` keys, for ``jaxbayes run --help``.
      length_keys: ``[params]`` keys that only say how far the run goes, so a resumed run may change them (a
        longer run continues a shorter one); every other key must equal the checkpointed run's. A key that
        also shapes the steps (a schedule over the total length) must not be listed.
    """

    name: str
    description: str
    params: Mapping[str, Field]
    num_steps: Callable[..., int]
    init: Callable[[JobContext], PyTree]
    step: Callable[[JobContext, PyTree, int], PyTree]
    finish: Callable[[JobContext, PyTree], dict[str, Any]]
    check: Callable[[Mapping[str, Any]], str | None] | None = None
    check_data: Callable[[Mapping[str, Any], Any], str | None] | None = None
    data: str = "none"
    summary: Callable[[Mapping[str, Any], Any], str] | None = None
    length_keys: tuple[str, ...] = ()
    open_data: Callable[[Mapping[str, Any], Path], Any] | None = None
    data_fields: Mapping[str, Field] = MappingProxyType({})


def count_steps(kind: JobKind, params: Mapping[str, Any], data: Any) -> int:
    """How many steps ``kind`` runs: ``num_steps(params)``, or ``num_steps(params, data)`` if it takes two
    arguments."""
    if len(inspect.signature(kind.num_steps).parameters) >= 2:
        return int(kind.num_steps(params, data))
    return int(kind.num_steps(params))
