"""GP-Laplace classifiers and their Student-t scale mixtures (_laplace_classification.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.kernels import (
    Dense,
    Erf,
    laplace_binary,
    laplace_multiclass,
    serial,
    student_t_classify,
    student_t_classify_multiclass,
)

NET = serial(Dense(1, 1.2, 0.3), Erf(), Dense(1, 1.0, 0.1))


def test_laplace_classification_mode_limit_and_accuracy(x64):
    from jaxbayes import datasets
    from jaxbayes.kernels import ReLU

    d = datasets.load("breast_cancer", seed=0)
    x, y = jnp.asarray(d.x_train[:150], jnp.float64), jnp.asarray(d.y_train[:150])
    xt, yt = jnp.asarray(d.x_test, jnp.float64), np.asarray(d.y_test)
    net = serial(Dense(1, 1.0, 0.1), ReLU(), Dense(1, 1.5, 0.1))
    k, kx, kd = net.kernel_fn(x).nngp, net.kernel_fn(xt, x).nngp, jnp.diagonal(net.kernel_fn(xt).nngp)
    probs, ev, f = jax.jit(laplace_binary)(k, y, kx, kd)
    # the Laplace mode solves f = K (y - sigmoid(f)) (Rasmussen & Williams eq. 3.17)
    np.testing.assert_allclose(f, k @ (y - jax.nn.sigmoid(f)), rtol=1e-6, atol=1e-6)  # jitter 1e-8 in B
    assert float(np.mean((np.asarray(probs) > 0.5) == yt)) > 0.9
    # alpha -> infinity with beta = alpha: every draw has sigma^2 -> 1, the plain Laplace classifier
    classify = jax.jit(lambda a, b, num: student_t_classify(jax.random.key(0), k, y, kx, kd, alpha=a, beta=b,
                                                            num_scales=num), static_argnums=2)
    out = classify(1e8, 1e8, 4)
    np.testing.assert_allclose(out.probs, probs, atol=1e-4)
    heavy = classify(2.0, 2.0, 16)
    assert float(np.mean((np.asarray(heavy.probs) > 0.5) == yt)) > 0.9
    assert 1.0 <= float(heavy.ess) <= 16.0
    with pytest.raises(ValueError, match="alpha must be finite and > 0"):
        student_t_classify(jax.random.key(0), k, y, kx, kd, alpha=-1.0, beta=1.0)


def test_laplace_multiclass_vs_dense_formulas(x64):

    rng = np.random.default_rng(0)
    n, m, num_classes = 12, 3, 3
    x = rng.normal(size=(n + m, 2))
    kall = 2.0 * np.exp(-0.5 * np.sum((x[:, None] - x[None]) ** 2, -1)) + 1e-3 * np.eye(n + m)
    k, kx, kd = kall[:n, :n], kall[n:, :n], np.diagonal(kall)[n:]
    y = rng.integers(0, num_classes, n)
    out = jax.jit(lambda a, b, c, d: laplace_multiclass(a, b, c, d, num_classes=num_classes))(k, y, kx, kd)
    f = np.asarray(out.mode)
    yh = np.eye(num_classes)[y]
    pi = np.exp(f - f.max(1, keepdims=True))
    pi /= pi.sum(1, keepdims=True)
    # the mode: the gradient of log p(y | f) + log p(f), (y - pi) - K^-1 f, vanishes (R&W eq. 3.39)
    np.testing.assert_allclose(f, k @ (yh - pi), rtol=1e-6, atol=1e-7)
    # dense Laplace evidence and predictive, latents stacked class-major: W = D - Pi Pi^T, K~ = blockdiag(K)
    kt = np.kron(np.eye(num_classes), k)
    fv, pv = f.T.ravel(), pi.T.ravel()
    big_pi = np.vstack([np.diag(pi[:, c]) for c in range(num_classes)])
    w = np.diag(pv) - big_pi @ big_pi.T
    logz = np.log(np.sum(np.exp(f), 1))
    ev = (-0.5 * fv @ np.linalg.solve(kt, fv) + np.sum(yh * f) - np.sum(logz)
          - 0.5 * np.linalg.slogdet(np.eye(n * num_classes) + kt @ w)[1])
    np.testing.assert_allclose(out.log_evidence, ev, rtol=1e-6)
    kst = np.kron(np.eye(num_classes), kx)  # (m C, n C)
    cov = np.kron(np.eye(num_classes), np.diag(kd)) - kst @ np.linalg.solve(np.eye(n * num_classes) + w @ kt,
                                                                           w @ kst.T)
    cov = cov.reshape(num_classes, m, num_classes, m)
    for i in range(m):
        np.testing.assert_allclose(out.cov[i], cov[:, i, :, i], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(out.mean, kx @ (yh - pi), rtol=1e-6, atol=1e-8)
    # scale mixture with alpha = beta -> infinity: every sigma^2 -> 1; probabilities = E[softmax(f_*)], here by a
    # large independent Monte Carlo (tolerance: 5 standard errors of the two estimates)
    probs = student_t_classify_multiclass(jax.random.key(1), k, y, kx, kd, num_classes=num_classes, alpha=1e8,
                                          beta=1e8, num_scales=2, num_mc=4000).probs
    draws = rng.multivariate_normal(np.zeros(num_classes), np.eye(num_classes), size=(40000, m))
    ref = []
    for i in range(m):
        fi = np.asarray(out.mean[i]) + draws[:, i] @ np.linalg.cholesky(np.asarray(out.cov[i])).T
        e = np.exp(fi - fi.max(1, keepdims=True))
        ref.append(np.mean(e / e.sum(1, keepdims=True), 0))
    np.testing.assert_allclose(probs, np.array(ref), atol=5 * 0.5 * np.sqrt(1 / 4000 + 1 / 40000))
    np.testing.assert_allclose(np.sum(probs, 1), 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="y_train must be"):
        laplace_multiclass(k, y.astype(float), kx, kd, num_classes=num_classes)
    with pytest.raises(ValueError, match="num_classes"):
        laplace_multiclass(k, y, kx, kd, num_classes=1)
