"""The built-in pod-job kinds, one module per pillar, listed here explicitly; add more with
:func:`register_job_kind`."""

from __future__ import annotations

import importlib

from jaxbayes.jobs._kind import JobKind

BUILTIN = ("jaxbayes.jobs.kinds.sde", "jaxbayes.jobs.kinds.ot", "jaxbayes.jobs.kinds.kernels",
           "jaxbayes.jobs.kinds.kernels_gram",
           "jaxbayes.jobs.kinds.gp", "jaxbayes.jobs.kinds.vi")

_EXTRA: dict[str, JobKind] = {}


def register_job_kind(kind: JobKind) -> None:
    """Add a :class:`jaxbayes.jobs.JobKind` that ``jaxbayes run`` accepts."""
    _EXTRA[kind.name] = kind


def job_kinds() -> dict[str, JobKind]:
    """Every job kind by name: the built-in modules' ``JOB_KINDS`` (imported on first use), then registered ones."""
    found: dict[str, JobKind] = {}
    for module_name in BUILTIN:
        found.update(importlib.import_module(module_name).JOB_KINDS)
    return found | _EXTRA


__all__ = ["BUILTIN", "job_kinds", "register_job_kind"]
