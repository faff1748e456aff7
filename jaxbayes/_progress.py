"""Progress bars that show on process 0 only (rate and ETA), quiet elsewhere and when not wanted."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from tqdm.auto import tqdm


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             disable: bool | None = None, **kwargs) -> tqdm:
    """A ``tqdm`` bar on stderr; silent on non-zero JAX processes or with ``JAXBAYES_PROGRESS=0``."""
    if disable is None:
        disable = os.environ.get("JAXBAYES_PROGRESS", "1") == "0" or _process_index() != 0
    return tqdm(iterable, total=total, desc=desc, disable=disable, file=sys.stderr, dynamic_ncols=True,
                leave=False, **kwargs)


def _process_index() -> int:
    import jax

    return jax.process_index() if jax.distributed.is_initialized() else 0
