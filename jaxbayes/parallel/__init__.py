"""Meshes, sharding helpers, data-parallel maps, per-sample keys and multi-host start-up.

Default style: ``jax.jit`` with ``NamedSharding`` over :func:`data_mesh`, letting XLA insert the
collectives. Per-sample work whose loop length depends on the data runs under :func:`data_parallel`
(``shard_map`` with ``vmap`` inside). Randomness comes from :func:`sample_keys`, indexed by global
sample position, so results never depend on batch size or device count.
"""

from jaxbayes.parallel._data_parallel import data_parallel as data_parallel
from jaxbayes.parallel._data_parallel import pad_to_multiple as pad_to_multiple
from jaxbayes.parallel._distributed import distribute_rows as distribute_rows
from jaxbayes.parallel._distributed import host_local_to_global as host_local_to_global
from jaxbayes.parallel._distributed import initialize as initialize
from jaxbayes.parallel._distributed import is_main_process as is_main_process
from jaxbayes.parallel._distributed import process_slice as process_slice
from jaxbayes.parallel._explicit import explicit_spec as explicit_spec
from jaxbayes.parallel._explicit import is_explicit as is_explicit
from jaxbayes.parallel._explicit import reshard_to_specs as reshard_to_specs
from jaxbayes.parallel._explicit import shard_rows_like as shard_rows_like
from jaxbayes.parallel._explicit import take_rows as take_rows
from jaxbayes.parallel._explicit import unshard as unshard
from jaxbayes.parallel._keys import as_key as as_key
from jaxbayes.parallel._keys import index_keys as index_keys
from jaxbayes.parallel._keys import sample_keys as sample_keys
from jaxbayes.parallel._mesh import DATA_AXIS as DATA_AXIS
from jaxbayes.parallel._mesh import batch_sharding as batch_sharding
from jaxbayes.parallel._mesh import data_mesh as data_mesh
from jaxbayes.parallel._mesh import replicate as replicate
from jaxbayes.parallel._mesh import replicated_sharding as replicated_sharding
from jaxbayes.parallel._mesh import shard_batch as shard_batch

__all__ = [
    "DATA_AXIS",
    "as_key",
    "batch_sharding",
    "data_mesh",
    "data_parallel",
    "distribute_rows",
    "explicit_spec",
    "host_local_to_global",
    "index_keys",
    "initialize",
    "is_explicit",
    "is_main_process",
    "pad_to_multiple",
    "process_slice",
    "replicate",
    "replicated_sharding",
    "reshard_to_specs",
    "sample_keys",
    "shard_batch",
    "shard_rows_like",
    "take_rows",
    "unshard",
]
