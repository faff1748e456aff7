"""Job files: TOML, validated field by field before anything runs. A job file holds data, never code."""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

_REQUIRED = object()
# Step counters and sizes end up in int32 JAX arrays; a larger integer is a typo, not a plan.
INT_MAX = 2**31 - 1


class JobConfigError(ValueError):
    """A job file that cannot run; the message names the offending key."""


class Field(NamedTuple):
    """One parameter of a job: its type, default (``required()`` if none), an optional value check
    ``check(value) -> str | None`` returning a complaint, and a one-line description."""

    type: type | tuple[type, ...]
    default: Any = _REQUIRED
    check: Callable[[Any], str | None] | None = None
    doc: str = ""


def required() -> Any:
    """The default of a field that the job file must give."""
    return _REQUIRED


def positive(value: Any) -> str | None:
    """A ``Field.check`` for numbers that must be > 0."""
    return None if value > 0 else f"must be > 0, got {value}"


def non_negative(value: Any) -> str | None:
    """A ``Field.check`` for numbers that must be >= 0."""
    return None if value >= 0 else f"must be >= 0, got {value}"


def one_of(*choices: Any) -> Callable[[Any], str | None]:
    """A ``Field.check`` that accepts only ``choices``."""
    return lambda value: None if value in choices else f"must be one of {list(choices)}, got {value!r}"


def _type_name(t: type | tuple[type, ...]) -> str:
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def validate(table: Mapping[str, Any], schema: Mapping[str, Field], where: str) -> dict[str, Any]:
    """Check ``table`` against ``schema``: no unknown keys, every required key, right types, checks pass.

    Integers are accepted where floats are expected; booleans are never taken for numbers; integers must lie
    within ``[-INT_MAX, INT_MAX]`` (JAX counters are int32) and floats must be finite (TOML allows ``inf``
    and ``nan``). Returns the table with defaults filled in.
    """
    if not isinstance(table, Mapping):
        raise JobConfigError(f"{where} must be a table, got {type(table).__name__}")
    unknown = sorted(set(table) - set(schema))
    if unknown:
        raise JobConfigError(f"{where}.{unknown[0]}: unknown key; allowed: {', '.join(sorted(schema))}")
    out: dict[str, Any] = {}
    for name, field in schema.items():
        if name not in table:
            if field.default is _REQUIRED:
                raise JobConfigError(f"{where}.{name}: missing required key ({field.doc or _type_name(field.type)})")
            out[name] = field.default
            continue
        value = table[name]
        types = field.type if isinstance(field.type, tuple) else (field.type,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            raise JobConfigError(f"{where}.{name}: expected {_type_name(field.type)}, got {type(value).__name__} "
                                 f"{value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise JobConfigError(f"{where}.{name}: must be a finite number, got {value}")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_MAX:
            raise JobConfigError(f"{where}.{name}: {value} is out of range (|value| <= {INT_MAX})")
        if field.check is not None and (complaint := field.check(value)):
            raise JobConfigError(f"{where}.{name}: {complaint}")
        out[name] = value
    return out


COMMON = {
    "kind": Field(str, doc="the job kind, e.g. 'ot.sinkhorn_batch'"),
    "name": Field(str, "", doc="a label for the run (default: the file's stem)"),
    "output_dir": Field(str, "", doc="where results and checkpoints go (default: jaxbayes-runs/<name>)"),
    "seed": Field(int, 0, non_negative, "seed of every random number the job draws"),
    "checkpoint_every": Field(int, 0, non_negative, "steps between orbax checkpoints (0: only at the end)"),
    "distributed": Field(dict, {}, doc="explicit multi-process settings for local runs"),
    "params": Field(dict, {}, doc="the kind's parameters"),
    "data": Field(dict, {}, doc="the data the kind reads (see jaxbayes.jobs._data): path/x/y or a bundled name"),
}

DISTRIBUTED = {
    "coordinator_address": Field(str, "", doc="host:port of process 0"),
    "num_processes": Field(int, 1, positive, "how many processes take part"),
    "process_id": Field(int, -1, doc="this process's index (default: $JAXBAYES_PROCESS_ID)"),
    "cpu_devices": Field(int, 0, non_negative, "simulate this many CPU devices per process (0: leave as is)"),
}


class JobSpec(NamedTuple):
    """A validated job file: the common settings, the distributed settings and the kind's parameters."""

    kind: str
    name: str
    output_dir: Path
    seed: int
    checkpoint_every: int
    distributed: dict[str, Any]
    params: dict[str, Any]
    data: Any = None  # the opened JobData, or None for kinds that read no [data] table
    length_keys: tuple[str, ...] = ()

    def fingerprint(self) -> dict[str, Any]:
        """What decides a run's result, which a resumed run must share (``<output_dir>/job.json`` holds it):
        kind, seed, ``[data]`` and ``[params]`` except the kind's ``length_keys``."""
        params = {k: v for k, v in self.params.items() if k not in self.length_keys}
        data = self.data.table if self.data is not None else {}
        return {"kind": self.kind, "seed": self.seed, "params": params, "data": data}


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``raw`` with ``KEY=VALUE`` overrides applied (``params.batch_size=512``, ``data.path="x.npz"``).

    ``VALUE`` is read as a TOML value (``512``, ``1e-3``, ``true``, ``[64, 64]``, ``"text"``); anything that is
    not valid TOML is taken as a string. Dotted keys name nested tables (created when missing).

    Example:
      >>> apply_overrides({"params": {"a": 1}}, ["params.a=2", "params.b=[1, 2]", "name=run-7"])
      {'params': {'a': 2, 'b': [1, 2]}, 'name': 'run-7'}
    """
    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise JobConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. params.batch_size=512")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        *tables, leaf = key.strip().split(".")
        target = out
        for name in tables:
            target = target.setdefault(name, {})
            if not isinstance(target, dict):
                raise JobConfigError(f"--set {item!r}: {name} is not a table")
        target[leaf] = value
    return out


def load_job(path: str | Path, kinds: Mapping[str, Any], overrides: Sequence[str] = ()) -> JobSpec:
    """Read and validate a job file against the registered ``kinds``, with ``KEY=VALUE`` ``overrides``
    (:func:`apply_overrides`), and open its ``[data]``; raises :class:`JobConfigError`."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as err:
        raise JobConfigError(f"job file not found: {path}") from err
    except tomllib.TOMLDecodeError as err:
        raise JobConfigError(f"{path}: not valid TOML: {err}") from err
    top = validate(apply_overrides(raw, overrides), COMMON, "job")
    if top["kind"] not in kinds:
        raise JobConfigError(f"job.kind: unknown kind {top['kind']!r}; available: {', '.join(sorted(kinds))}")
    kind = kinds[top["kind"]]
    params = validate(top["params"], kind.params, "params")
    if kind.check is not None and (complaint := kind.check(params)):
        raise JobConfigError(complaint)
    distributed = validate(top["distributed"], DISTRIBUTED, "distributed")
    data = None
    if kind.data == "none" and top["data"]:
        raise JobConfigError(f"data: kind {top['kind']!r} reads no [data] table (its data is set in [params])")
    if kind.data == "required" and not top["data"]:
        raise JobConfigError(f"data: kind {top['kind']!r} needs a [data] table (path = ... or name = ...)")
    if top["data"]:
        from jaxbayes.jobs._data import open_job_data

        opener = kind.open_data or (lambda table, base: open_job_data(table, base=base))
        data = opener(top["data"], path.parent)
        if kind.check_data is not None and (complaint := kind.check_data(params, data)):
            raise JobConfigError(complaint)
    name = top["name"] or path.stem
    output_dir = Path(top["output_dir"] or Path("jaxbayes-runs") / name)
    return JobSpec(top["kind"], name, output_dir, top["seed"], top["checkpoint_every"], distributed, params,
                   data, kind.length_keys)
