"""Run a validated job on every host: distributed start-up, global mesh, steps, orbax checkpoints, resume.

Checkpoints are written by orbax into ``<output_dir>/checkpoints/<step>``; orbax writes into a temporary
folder and renames it only when complete, so a checkpoint interrupted by a crash is never restored.
``--resume`` restores the latest complete checkpoint and continues; since step ``i`` depends only on the
state and ``i``, the final result equals that of an uninterrupted run. The grain iterators a kind reads its
``[data]`` with are saved in the same checkpoint (each process its own position), so a resumed job reads
exactly the batch the killed one would have read next. ``<output_dir>/job.json`` records what decides the
result (kind, seed, ``[params]``, ``[data]``); resuming with a different job file is refused.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxbayes import parallel
from jaxbayes._progress import progress
from jaxbayes.jobs._config import JobConfigError, JobSpec, load_job
from jaxbayes.jobs._kind import JobContext, JobKind, count_steps


def _start_processes(distributed: dict[str, Any]) -> None:
    if distributed["cpu_devices"]:
        jax.config.update("jax_num_cpu_devices", distributed["cpu_devices"])
    if distributed["num_processes"] > 1:
        process_id = distributed["process_id"]
        if process_id < 0:
            env = os.environ.get("JAXBAYES_PROCESS_ID")
            if env is None:
                raise JobConfigError("distributed.process_id: not given and $JAXBAYES_PROCESS_ID is not set")
            process_id = int(env)
        if not distributed["coordinator_address"]:
            raise JobConfigError("distributed.coordinator_address: required when num_processes > 1")
        parallel.initialize(distributed["coordinator_address"], distributed["num_processes"], process_id)
    else:
        parallel.initialize()


def _checkpoint_manager(directory: Path):
    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory.resolve(), options=options)


def _check_writable(directory: Path) -> None:
    """Fail before any work if results and checkpoints could not be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
            pass
    except OSError as err:
        raise JobConfigError(f"job.output_dir: cannot write to {directory}: {err.strerror or err}") from err


def _write_atomic(path: Path, text: str) -> None:
    """Write by rename, so another process reading ``path`` sees the old file or the whole new one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    temporary.replace(path)


def _check_same_job(spec: JobSpec) -> None:
    """Refuse to resume (or reuse) an output folder whose run came from a different job file."""
    recorded = spec.output_dir / "job.json"
    if not recorded.is_file():
        return
    before, now = json.loads(recorded.read_text()), json.loads(json.dumps(spec.fingerprint()))
    for table in ("kind", "seed", "params", "data"):
        old, new = before.get(table), now[table]
        if old != new:
            if isinstance(old, dict) and isinstance(new, dict):
                key = next(k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
                where, old, new = f"{table}.{key}", old.get(key), new.get(key)
            else:
                where = f"job.{table}"
            raise JobConfigError(f"{where}: {spec.output_dir} holds a run of a different job ({where} was {old!r}, "
                                 f"is {new!r}); choose another output_dir")


def plan_lines(spec: JobSpec, kind: JobKind, processes: int | None = None) -> list[str]:
    """The ``data:`` and ``plan:`` lines that ``jaxbayes validate`` and the start-up summary print."""
    lines = [f"  data: {spec.data.summary(processes)}"] if spec.data is not None else []
    if kind.summary is not None:
        lines.append(f"  plan: {kind.summary(spec.params, spec.data)}")
    return lines


def startup_summary(spec: JobSpec, kind: JobKind, mesh) -> str:
    """What the run is about to do: kind, data per process, mesh, devices, the plan and the output folder."""
    lines = [f"jaxbayes run: {spec.kind} ({kind.description})",
             f"  mesh {dict(mesh.shape)} over {jax.device_count()} devices ({jax.devices()[0].device_kind}), "
             f"{jax.process_count()} processes, {jax.local_device_count()} devices on this one",
             f"  output: {spec.output_dir}"]
    return "\n".join(lines + plan_lines(spec, kind, jax.process_count()))


def _checkpoint_args(state, iterators):
    """One orbax checkpoint for the state and every data iterator (grain's own checkpoint handler)."""
    items = {"state": ocp.args.StandardSave(state)}
    for i, batches in enumerate(iterators):
        items[f"data{i}"] = grain.checkpoint.CheckpointSave(batches.iterator)
    return ocp.args.Composite(**items)


def json_metrics(value: Any, path: str = "metrics", bad: dict[str, str] | None = None) -> Any:
    """``value`` as plain JSON (arrays to lists); non-finite numbers become ``null`` and are listed in ``bad``
    as ``{path: reason}``, so ``result.json`` is always valid JSON and never hides a NaN."""
    bad = {} if bad is None else bad
    if isinstance(value, dict):
        return {k: json_metrics(v, f"{path}.{k}", bad) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_metrics(v, f"{path}[{i}]", bad) for i, v in enumerate(value)]
    if isinstance(value, str | bool) or value is None:
        return value
    array = np.asarray(value)
    if array.ndim:
        return json_metrics(array.tolist(), path, bad)
    item = array.item()
    if isinstance(item, float) and not math.isfinite(item):
        bad[path] = f"non-finite value ({item})"
        return None
    return item


def run_job(spec: JobSpec, kind: JobKind, *, resume: bool = False) -> dict[str, Any]:
    """Run ``spec`` with ``kind`` and return the result written to ``<output_dir>/result.json``.

    Non-finite metrics are written as ``null`` and listed under ``"nonfinite"`` with the reason;
    :func:`run_job_file` then exits with code 1.
    """
    _check_same_job(spec)
    _check_writable(spec.output_dir)
    _start_processes(spec.distributed)
    mesh = parallel.data_mesh()
    is_main = parallel.is_main_process()
    if is_main:
        print(startup_summary(spec, kind, mesh), flush=True)
        _write_atomic(spec.output_dir / "job.json", json.dumps(spec.fingerprint(), indent=2))
    ctx = JobContext(spec.params, jax.random.key(spec.seed), mesh, spec.output_dir, is_main, {}, spec.data, spec.seed)
    total = count_steps(kind, spec.params, spec.data)
    manager = _checkpoint_manager(spec.output_dir / "checkpoints")
    latest = manager.latest_step()
    if latest is not None and not resume:
        raise JobConfigError(f"{spec.output_dir} already holds checkpoints (latest step {latest}); "
                             "pass --resume to continue, or choose another output_dir")
    replicated = parallel.replicated_sharding(mesh)
    iterators = spec.data.iterators if spec.data is not None else []
    if resume and latest is not None and spec.data is not None:
        # a kind may make its iterators in init or in its first step: each is positioned when it is made
        spec.data.on_new_iterator = lambda k, batches: manager.restore(latest, args=ocp.args.Composite(
            **{f"data{k}": grain.checkpoint.CheckpointRestore(batches.iterator)}))
    state = jax.device_put(kind.init(ctx), replicated)
    start = 0
    if resume and latest is not None:
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state)
        state = manager.restore(latest, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
        start = latest
    started = time.perf_counter()
    bar = progress(total=total, initial=start, desc=f"{spec.kind} {spec.name}", disable=None if is_main else True)
    for i in range(start, total):
        state, previous = kind.step(ctx, state, i), state
        # At most two steps in flight: XLA:CPU's launcher can deadlock once dozens of multi-device programs
        # with collectives are queued (a launch blocks on one device's in-flight limit while the launch the
        # pending all-reduce waits for sits behind it), which a loaded CPU host reaches easily.
        jax.block_until_ready(previous)
        bar.update(1)
        done = i + 1
        if spec.checkpoint_every and done % spec.checkpoint_every == 0 and done < total:
            manager.save(done, args=_checkpoint_args(state, iterators))
    bar.close()
    manager.save(total, args=_checkpoint_args(state, iterators), force=True)
    manager.wait_until_finished()
    nonfinite: dict[str, str] = {}
    metrics = json_metrics(kind.finish(ctx, state), bad=nonfinite)
    result = {
        "kind": spec.kind,
        "name": spec.name,
        "params": spec.params,
        "seed": spec.seed,
        "steps": total,
        "resumed_from": start,
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "wall_s": round(time.perf_counter() - started, 3),
        "metrics": metrics,
    }
    if nonfinite:
        result["nonfinite"] = nonfinite
    if is_main:
        spec.output_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(json_metrics(result), indent=2, allow_nan=False)
        (spec.output_dir / "result.json").write_text(text)
    return result


def run_job_file(path: str | Path, *, resume: bool = False, overrides: Sequence[str] = ()) -> int:
    """Validate and run a job file (the ``jaxbayes run`` command); returns the exit code."""
    from jaxbayes.jobs.kinds import job_kinds

    kinds = job_kinds()
    spec = load_job(path, kinds, overrides)
    try:
        result = run_job(spec, kinds[spec.kind], resume=resume)
    except ImportError as err:  # an optional dependency of the kind or its data set
        missing = f" (missing package {err.name!r})" if getattr(err, "name", None) else ""
        raise JobConfigError(f"job.kind {spec.kind!r} needs an optional package{missing}: "
                             f"{str(err).splitlines()[0]}") from err
    if parallel.is_main_process():
        print(f"{spec.kind}: {result['steps']} steps on {result['devices']} devices, "
              f"{result['processes']} processes; result: {spec.output_dir / 'result.json'}")
        for where, reason in result.get("nonfinite", {}).items():
            print(f"jaxbayes: error: {where} is a {reason}; written as null", file=sys.stderr)
    return 1 if result.get("nonfinite") else 0
