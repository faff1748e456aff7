"""The demo report (``jaxbayes demo``): one module per pillar, listed here explicitly, plus plotting helpers.

A demo is ``fn(outdir: pathlib.Path, *, quick: bool) -> dict``: it writes its PNG plots into ``outdir``, lists
them under ``"figures"`` and returns JSON-able metrics. Add one with :func:`register_demo`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DemoFn = Callable[..., dict[str, Any]]

# name -> module of this package holding ``demo``; imported on first use (each pulls in its whole pillar).
BUILTIN = {
    "sde": "jaxbayes.demos.sde",
    "ot": "jaxbayes.demos.ot",
    "kernels": "jaxbayes.demos.kernels",
    "vi": "jaxbayes.demos.vi",
}


@dataclass(frozen=True)
class Demo:
    """A named demo: ``fn(outdir, quick=...)`` writes plots into ``outdir`` and returns metrics."""

    name: str
    fn: DemoFn
    description: str


_EXTRA: dict[str, Demo] = {}


def register_demo(name: str, fn: DemoFn, description: str = "") -> None:
    """Add a demo that ``jaxbayes demo`` runs after the built-in ones."""
    _EXTRA[name] = Demo(name, fn, description)


def demos() -> dict[str, Demo]:
    """Every demo: the built-in ones in :data:`BUILTIN` order, then the registered ones."""
    found: dict[str, Demo] = {}
    for name, module_name in BUILTIN.items():
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or "").strip().splitlines()
        found[name] = Demo(name, module.demo, doc[0] if doc else "")
    return found | _EXTRA


__all__ = ["BUILTIN", "Demo", "demos", "register_demo"]
