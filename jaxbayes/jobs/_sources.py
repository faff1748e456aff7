"""Row sources over a user's files, read lazily: ``.npy``, ``.npz``, a folder of shards, images, tables.

A source is what grain calls a random-access data source (``len(source)``, ``source[i]``), plus
``rows(indices) -> {"x": ..., "y": ...}``, which reads a batch of rows at once. Arrays are memory-mapped:
``.npy`` files with ``np.load(mmap_mode="r")``, and the members of an uncompressed ``.npz`` (what
``np.savez`` writes) by mapping the member's bytes inside the zip file, so a process touches only the rows it
reads. A compressed member (``np.savez_compressed``) cannot be mapped and is decompressed once, when it is
first read. Images (PNG/JPEG) are decoded per row; CSV tables are parsed once (a text format cannot be
mapped), Parquet tables are memory-mapped by pyarrow.

Every check that can fail on a user's data runs when the source is opened, and raises
:class:`~jaxbayes.jobs.JobConfigError` with a one-line message naming the ``[data]`` key.

Example:
  >>> import numpy as np, tempfile, pathlib
  >>> folder = pathlib.Path(tempfile.mkdtemp())
  >>> np.savez(folder / "train.npz", images=np.zeros((10, 4, 4, 1), np.uint8), labels=np.arange(10))
  >>> src = open_source(folder / "train.npz", x="images", y="labels")
  >>> len(src), src.x_shape, src.rows(np.array([3, 1]))["y"].tolist()
  (10, (4, 4, 1), [3, 1])
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxbayes.jobs._config import JobConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TABLE_SUFFIXES = (".csv", ".parquet")
ARRAY_SUFFIXES = (".npy", ".npz")


class ArraySource:
    """Rows of one or two equally long arrays (memory-mapped or in memory): ``x`` and optionally ``y``."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None = None, *, where: str = "data"):
        if x.ndim == 0:
            raise JobConfigError(f"{where}.x: expected an array with a row axis, got a scalar")
        if y is not None and len(y) != len(x):
            raise JobConfigError(f"{where}.y: {len(y)} rows, but x has {len(x)}")
        for name, array in (("x", x), ("y", y)):
            if array is not None and not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
                raise JobConfigError(f"{where}.{name}: expected numbers, got dtype {array.dtype}")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """One row ``{"x": x_i, "y": y_i}`` (grain's random-access protocol)."""
        return {k: v[0] for k, v in self.rows(np.asarray([index])).items()}

    @property
    def x_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def x_dtype(self) -> np.dtype:
        return self.x.dtype

    @property
    def has_y(self) -> bool:
        return self.y is not None

    def targets(self, indices: np.ndarray) -> np.ndarray:
        """Only the ``y`` of ``indices`` (no input is read)."""
        return np.asarray(self.y[np.asarray(indices)])

    def rows(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        out = {"x": np.asarray(self.x[indices])}
        if self.y is not None:
            out["y"] = np.asarray(self.y[indices])
        return out


class ConcatSource(ArraySource):
    """The rows of several sources one after another (a folder of shards), read shard by shard."""

    def __init__(self, parts: Sequence[ArraySource], *, where: str = "data"):
        first = parts[0]
        for part, name in zip(parts[1:], range(1, len(parts)), strict=True):
            if part.x_shape != first.x_shape or part.x_dtype != first.x_dtype or part.has_y != first.has_y:
                raise JobConfigError(f"{where}.path: shard {name} has rows {part.x_shape} {part.x_dtype}"
                                     f"{' with' if part.has_y else ' without'} y, shard 0 has {first.x_shape} "
                                     f"{first.x_dtype}{' with' if first.has_y else ' without'} y")
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def x_shape(self):
        return self.parts[0].x_shape

    @property
    def x_dtype(self):
        return self.parts[0].x_dtype

    @property
    def has_y(self):
        return self.parts[0].has_y

    def targets(self, indices: np.ndarray) -> np.ndarray:
        return self._gather(indices, lambda part, local: {"y": part.targets(local)})["y"]

    def rows(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return self._gather(indices, lambda part, local: part.rows(local))

    def _gather(self, indices: np.ndarray, read) -> dict[str, np.ndarray]:
        indices = np.asarray(indices)
        shard = np.searchsorted(self.starts, indices, side="right") - 1
        out = None
        for s in np.unique(shard):
            where = np.nonzero(shard == s)[0]
            part = read(self.parts[s], indices[where] - self.starts[s])
            if out is None:
                out = {k: np.empty((len(indices),) + v.shape[1:], v.dtype) for k, v in part.items()}
            for k, v in part.items():
                out[k][where] = v
        return out


class SubsetSource(ArraySource):
    """The rows ``indices`` of another source (a train or test split that copies nothing)."""

    def __init__(self, parent: ArraySource, indices: np.ndarray):
        self.parent, self.indices = parent, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    x_shape = property(lambda self: self.parent.x_shape)
    x_dtype = property(lambda self: self.parent.x_dtype)
    has_y = property(lambda self: self.parent.has_y)

    def targets(self, indices: np.ndarray) -> np.ndarray:
        return self.parent.targets(self.indices[np.asarray(indices)])

    def rows(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return self.parent.rows(self.indices[np.asarray(indices)])


class ImageSource(ArraySource):
    """Image files decoded per row into ``(H, W, C)`` uint8 arrays; labels from the parent folder's name."""

    def __init__(self, files: Sequence[Path], labels: np.ndarray | None, shape: tuple[int, ...], mode: str):
        self.files, self.y, self._shape, self.mode = list(files), labels, shape, mode

    def __len__(self) -> int:
        return len(self.files)

    x_shape = property(lambda self: self._shape)
    x_dtype = property(lambda self: np.dtype(np.uint8))
    has_y = property(lambda self: self.y is not None)

    def rows(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        from PIL import Image

        x = np.empty((len(indices),) + self._shape, np.uint8)
        for row, i in enumerate(np.asarray(indices)):
            with Image.open(self.files[i]) as image:
                x[row] = np.asarray(image.convert(self.mode)).reshape(self._shape)
        out = {"x": x}
        if self.y is not None:
            out["y"] = self.y[np.asarray(indices)]
        return out


def _npz_member(path: Path, key: str, where: str, role: str) -> np.ndarray:
    """Member ``key`` of an ``.npz`` file, memory-mapped when stored uncompressed (hand-written: numpy's
    ``np.load(..., mmap_mode=)`` ignores the mode for ``.npz`` archives and decompresses into memory)."""
    with zipfile.ZipFile(path) as archive:
        names = {name.removesuffix(".npy"): name for name in archive.namelist()}
        if key not in names:
            raise JobConfigError(f"{where}.{role}: no array {key!r} in {path}; it holds {', '.join(sorted(names))}")
        info = archive.getinfo(names[key])
        if info.compress_type != zipfile.ZIP_STORED:
            with archive.open(info) as member:
                return np.lib.format.read_array(member, allow_pickle=False)
    with open(path, "rb") as raw:
        raw.seek(info.header_offset)
        local = raw.read(30)  # the local file header: lengths of the name and extra field sit at bytes 26-29
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        raw.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(raw)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(raw)
        offset = raw.tell()
    if dtype.hasobject:
        raise JobConfigError(f"{where}.{role}: {key!r} in {path} holds Python objects, not numbers")
    if not shape or 0 in shape:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _array_file(path: Path, x: str, y: str, where: str) -> ArraySource:
    if path.suffix == ".npy":
        if y:
            raise JobConfigError(f"{where}.y: a .npy file holds one array (x); put x and y in one .npz instead")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as err:
            raise JobConfigError(f"{where}.path: cannot read {path} as numbers: {err}") from err
        return ArraySource(array, None, where=where)
    if not x:
        raise JobConfigError(f"{where}.x: required for an .npz file (the name of the array of inputs)")
    try:
        xs = _npz_member(path, x, where, "x")
        ys = _npz_member(path, y, where, "y") if y else None
    except JobConfigError:  # a missing member: its own message (JobConfigError is a ValueError)
        raise
    except (zipfile.BadZipFile, ValueError) as err:
        raise JobConfigError(f"{where}.path: {path} is not a readable .npz file: {err}") from err
    return ArraySource(xs, ys, where=where)


def _table(path: Path, x: str | Sequence[str], y: str, where: str) -> ArraySource:
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet

    try:
        table = (pyarrow.parquet.read_table(path, memory_map=True) if path.suffix == ".parquet"
                 else pyarrow.csv.read_csv(path))
    except (pa.ArrowInvalid, OSError) as err:
        raise JobConfigError(f"{where}.path: cannot read the table {path}: {str(err).splitlines()[0]}") from err
    columns = list(table.column_names)
    wanted = [x] if isinstance(x, str) and x else list(x) or [c for c in columns if c != y]
    for role, names in (("x", wanted), ("y", [y] if y else [])):
        for name in names:
            if name not in columns:
                raise JobConfigError(f"{where}.{role}: no column {name!r} in {path}; columns: {', '.join(columns)}")
            kind = table.schema.field(name).type
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
                raise JobConfigError(f"{where}.{role}: column {name!r} of {path} is not numeric ({kind})")
            if table.column(name).null_count:
                raise JobConfigError(f"{where}.{role}: column {name!r} of {path} has missing values")
    xs = np.stack([table.column(c).to_numpy() for c in wanted], axis=1)
    ys = table.column(y).to_numpy() if y else None
    return ArraySource(xs, ys, where=where)


def _images(folder: Path, files: list[Path], y: str, where: str) -> ArraySource:
    from PIL import Image

    sizes = {}
    for file in files:
        try:
            with Image.open(file) as image:
                sizes.setdefault((image.size, len(image.getbands())), file)
        except OSError as err:
            raise JobConfigError(f"{where}.path: {file} is not a readable image: {err}") from err
    if len(sizes) > 1:
        (a, fa), (b, fb) = list(sizes.items())[:2]
        raise JobConfigError(f"{where}.path: images of mixed sizes in {folder}: {fa.name} is {a[0][0]}x{a[0][1]} "
                             f"with {a[1]} channels, {fb.name} is {b[0][0]}x{b[0][1]} with {b[1]}")
    (width, height), channels = next(iter(sizes))
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels, "RGB")
    labels = None
    if y:
        if y != "folder":
            raise JobConfigError(f"{where}.y: for a folder of images y must be \"folder\" (labels from "
                                 f"sub-folder names) or left out, got {y!r}")
        classes = sorted({f.parent.relative_to(folder).as_posix() for f in files})
        labels = np.asarray([classes.index(f.parent.relative_to(folder).as_posix()) for f in files], np.int32)
    return ImageSource(files, labels, (height, width, {"L": 1, "RGB": 3, "RGBA": 4}[mode]), mode)


def open_source(path: str | Path, *, x: str | Sequence[str] = "", y: str = "", where: str = "data") -> ArraySource:
    """Open the user's data at ``path`` as a row source (see the module docstring for the formats).

    Args:
      path: an ``.npy``/``.npz`` file, a ``.csv``/``.parquet`` table, or a folder of ``.npy``/``.npz`` shards
        (read in file-name order) or of PNG/JPEG images (searched recursively, in path order).
      x: the array of inputs (``.npz``), or the input columns (tables; default: every column but ``y``).
      y: the array or column of targets (optional); ``"folder"`` for images labelled by their sub-folder.
      where: the job-file table named in error messages.
    """
    path = Path(path)
    if not path.exists():
        raise JobConfigError(f"{where}.path: {path} does not exist")
    if path.is_file():
        if path.suffix in ARRAY_SUFFIXES:
            return _array_file(path, x, y, where)
        if path.suffix in TABLE_SUFFIXES:
            return _table(path, x, y, where)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return _images(path.parent, [path], y, where)
        raise JobConfigError(f"{where}.path: unknown format {path.suffix!r}; expected one of "
                             f"{', '.join(ARRAY_SUFFIXES + TABLE_SUFFIXES + IMAGE_SUFFIXES)} or a folder")
    shards = sorted(p for p in path.iterdir() if p.suffix in ARRAY_SUFFIXES)
    images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if shards:
        return ConcatSource([_array_file(s, x, y, where) for s in shards], where=where)
    if images:
        return _images(path, images, y, where)
    raise JobConfigError(f"{where}.path: {path} holds no .npy/.npz shards and no PNG/JPEG images")


__all__ = ["ArraySource", "ConcatSource", "ImageSource", "SubsetSource", "open_source"]
