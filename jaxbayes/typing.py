"""Type aliases shared across jaxbayes."""

from typing import Any, TypeAlias

import jax
import numpy as np

Array: TypeAlias = jax.Array
ArrayLike: TypeAlias = jax.typing.ArrayLike
DTypeLike: TypeAlias = jax.typing.DTypeLike
PRNGKey: TypeAlias = jax.Array
PyTree: TypeAlias = Any
Shape: TypeAlias = tuple[int, ...]
NumpyArray: TypeAlias = np.ndarray

__all__ = ["Array", "ArrayLike", "DTypeLike", "NumpyArray", "PRNGKey", "PyTree", "Shape"]
