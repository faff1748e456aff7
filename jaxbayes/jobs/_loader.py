"""Global minibatches of a row source, each process reading only its own rows, with grain.

Batch ``i`` is a pure function of ``(seed, i)``: the rows are a grain ``MapDataset`` shuffled once per epoch
(grain's index shuffle, reseeded each epoch), cut into global batches of ``batch_size`` rows (the last
``len(source) mod batch_size`` rows of each epoch's order are dropped, so every row appears at most once per
epoch), and process ``p`` of ``P`` (grain's ``ShardByJaxProcess``) reads rows ``[p B/P, (p+1) B/P)`` of each
global batch and hands them to ``jax.make_array_from_process_local_data``. Hence the global batch, and a
job's result up to the float rounding of its collectives, does not depend on the number of processes or
devices; the reads are prefetched by grain's threads. The iterator's state is saved in the job's orbax
checkpoint (``grain.checkpoint.CheckpointSave``), so a resumed job continues on exactly the next batch.

Example:
  >>> import numpy as np
  >>> from jaxbayes import parallel
  >>> from jaxbayes.jobs._sources import ArraySource
  >>> batches = HostBatches(ArraySource(np.arange(20.0)[:, None]), parallel.data_mesh(), batch_size=8, seed=0)
  >>> next(batches)["x"].shape
  (8, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grain
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxbayes.jobs._config import JobConfigError
from jaxbayes.jobs._sources import ArraySource
from jaxbayes.parallel import DATA_AXIS


def epoch_seed(seed: int) -> int:
    """The shuffle seed grain gets: grain reseeds epoch ``e`` with ``seed + e``, so job seeds 0 and 1 would
    share all but one epoch order; hashing the job seed first keeps the orders of nearby seeds apart."""
    return int(np.random.SeedSequence([seed, 0x6A62]).generate_state(1)[0] >> 1)


class HostBatches(Iterator):
    """An endless iterator of global batches ``{"x": Array, "y": Array}`` sharded over ``mesh``'s data axis.

    Args:
      source: the rows (:mod:`jaxbayes.jobs._sources`).
      mesh: the global mesh; batches are split over ``axis_name``.
      batch_size: rows per global batch; a multiple of the axis size and at most ``len(source)``.
      seed: seed of the per-epoch shuffle.
      prepare: applied to each process's rows before they become global arrays (scaling, dtypes).
      prefetch: batches read ahead by grain's threads.
    """

    def __init__(self, source: ArraySource, mesh: Mesh, *, batch_size: int, seed: int,
                 prepare: Callable[[dict], dict] = lambda rows: rows, prefetch: int = 2,
                 axis_name: str = DATA_AXIS, where: str = "params.batch_size"):
        devices = mesh.shape[axis_name]
        if batch_size % devices:
            raise JobConfigError(f"{where}: {batch_size} is not a multiple of the {devices} devices")
        if batch_size > len(source):
            raise JobConfigError(f"{where}: {batch_size} is larger than the {len(source)} training rows")
        shard = grain.sharding.ShardByJaxProcess(drop_remainder=True)
        local = batch_size // shard.shard_count
        mine = slice(shard.shard_index * local, (shard.shard_index + 1) * local)
        dataset = (grain.MapDataset.range(len(source)).shuffle(seed=epoch_seed(seed))
                   .batch(batch_size, drop_remainder=True).repeat(None)
                   .map(lambda indices: prepare(source.rows(indices[mine]))))
        options = grain.ReadOptions(num_threads=1 if prefetch else 0, prefetch_buffer_size=prefetch)
        self.iterator = iter(dataset.to_iter_dataset(options))
        self.sharding = NamedSharding(mesh, PartitionSpec(axis_name))
        self.batch_size = batch_size
        self.batches_per_epoch = len(source) // batch_size

    def __next__(self) -> dict:
        rows = next(self.iterator)
        return {k: jax.make_array_from_process_local_data(self.sharding, v, (self.batch_size,) + v.shape[1:])
                for k, v in rows.items()}

    @property
    def position(self) -> int:
        """How many batches have been taken."""
        return int(self.iterator.get_state()["next_index"])


__all__ = ["HostBatches", "epoch_seed"]
