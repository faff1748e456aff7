"""Paths into nested parameter mappings (flax ``params``): read the sub-tree at a path, or replace it."""

from __future__ import annotations

from collections.abc import Mapping

from jaxbayes.typing import PyTree


def get_path(params: PyTree, path: tuple[str, ...]) -> PyTree:
    """The sub-tree of nested mappings ``params`` at ``path`` (``()``: ``params`` itself)."""
    for k in path:
        params = params[k]
    return params


def set_path(params: PyTree, path: tuple[str, ...], value: PyTree) -> PyTree:
    """A copy of nested mappings ``params`` with the sub-tree at ``path`` replaced by ``value``."""
    if not path:
        return value
    if not isinstance(params, Mapping):
        raise TypeError(f"parameters at {path} must be nested mappings, got {type(params).__name__}")
    return {**params, path[0]: set_path(params[path[0]], path[1:], value)}


__all__ = ["get_path", "set_path"]
