"""Where pillars plug in their demos, benchmarks and pod-job kinds without editing the CLI.

By convention a pillar ``jaxbayes/<pillar>/`` provides

* ``_demo.py`` with ``demo(outdir: pathlib.Path, *, quick: bool) -> dict`` returning JSON-able metrics
  (it writes its PNG plots and any extra files into ``outdir``);
* ``_jobs.py`` with ``JOB_KINDS: dict[str, JobKind]`` (see :mod:`jaxbayes.jobs`);

and the source tree provides ``benchmarks/bench_<pillar>.py`` with ``run(outdir, *, quick) -> list[dict]``.
Third-party code can add more with :func:`register_demo` and :func:`register_job_kind`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PILLARS = ("sde", "ot", "kernels", "vi")

DemoFn = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Demo:
    """A named demo: ``fn(outdir, quick=...)`` writes plots into ``outdir`` and returns metrics."""

    name: str
    fn: DemoFn
    description: str


_EXTRA_DEMOS: dict[str, Demo] = {}
_EXTRA_JOB_KINDS: dict[str, Any] = {}


def register_demo(name: str, fn: DemoFn, description: str = "") -> None:
    """Add a demo that ``jaxbayes demo`` runs after the built-in pillar demos."""
    _EXTRA_DEMOS[name] = Demo(name, fn, description)


def register_job_kind(kind: Any) -> None:
    """Add a :class:`jaxbayes.jobs.JobKind` that ``jaxbayes run`` accepts."""
    _EXTRA_JOB_KINDS[kind.name] = kind


def _pillar_module(pillar: str, name: str):
    module = f"jaxbayes.{pillar}.{name}"
    if importlib.util.find_spec(module) is None:
        return None
    return importlib.import_module(module)


def demos() -> dict[str, Demo]:
    """Every available demo, pillar demos first, in pillar order."""
    found: dict[str, Demo] = {}
    for pillar in PILLARS:
        module = _pillar_module(pillar, "_demo")
        if module is not None:
            doc = (module.__doc__ or "").strip().splitlines()
            found[pillar] = Demo(pillar, module.demo, doc[0] if doc else "")
    return found | _EXTRA_DEMOS


def job_kinds() -> dict[str, Any]:
    """Every pod-job kind, collected from the pillars' ``_jobs.py`` modules."""
    kinds: dict[str, Any] = {}
    for pillar in PILLARS:
        module = _pillar_module(pillar, "_jobs")
        if module is not None:
            kinds.update(module.JOB_KINDS)
    return kinds | _EXTRA_JOB_KINDS


def benchmarks_dir() -> Path | None:
    """The ``benchmarks/`` folder of the source checkout jaxbayes runs from, if there is one."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = root / "benchmarks"
        if (candidate / "run.py").is_file():
            return candidate
    return None
