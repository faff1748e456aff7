"""What a pod-job kind provides, and what the runner hands it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
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
    """

    params: Mapping[str, Any]
    key: PRNGKey
    mesh: Mesh
    output_dir: Path
    is_main: bool
    cache: dict


class JobKind(NamedTuple):
    """A kind of pod job: a fixed number of deterministic steps over a state pytree of arrays.

    Attributes:
      name: the ``kind`` string of job files, ``"<pillar>.<what>"``.
      description: one line for listings.
      params: the schema of the ``[params]`` table.
      num_steps: ``num_steps(params) -> int``.
      init: ``init(ctx) -> state``, a pytree of arrays (checkpointed with orbax).
      step: ``step(ctx, state, i) -> state`` for step index ``i``; must depend only on its inputs.
      finish: ``finish(ctx, state) -> dict`` of JSON-able metrics; on process 0 it may write PNGs into
        ``ctx.output_dir`` and list them under ``"figures"``.
      check: optional ``check(params) -> str | None`` for cross-field checks (data set names ...) run
        before anything else.
    """

    name: str
    description: str
    params: Mapping[str, Field]
    num_steps: Callable[[Mapping[str, Any]], int]
    init: Callable[[JobContext], PyTree]
    step: Callable[[JobContext, PyTree, int], PyTree]
    finish: Callable[[JobContext, PyTree], dict[str, Any]]
    check: Callable[[Mapping[str, Any]], str | None] | None = None
