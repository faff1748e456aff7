"""Every Python block of README.md runs as written, and what it computes matches its oracle (the tour must
stay true): each block's namespace is checked against a closed form or an independent numpy computation."""

import re
from pathlib import Path

import jax
import numpy as np
import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def check_parallel(ns):
    """Per-sample keys: the data-parallel draws equal one ``normal(fold_in(key, i))`` per index, bitwise."""
    samples, keys = np.asarray(ns["samples"]), ns["keys"]
    for i in (0, 1, 1023):
        np.testing.assert_array_equal(samples[i], np.asarray(jax.random.normal(keys[i], (2,))))
    assert ns["ds"].x_train.shape[0] + ns["ds"].x_test.shape[0] == 442  # diabetes, 20 % held out


def check_sde(ns):
    """Ring of 8 (radius 4, scale 0.3): per-coordinate variance 4^2 / 2 + 0.3^2 = 8.09, each sampler's within
    4.5 standard errors of it at n = 1000 (the standard error from the mixture's fourth moment); the PF-ODE
    log-likelihood equals the exact ``log p_eps`` to 0.01 nats (ODE tolerance 1e-5, one Rademacher probe)."""
    means, s2 = np.asarray(ns["mix"].means, np.float64), 0.3**2
    var = (means**2).mean(0) + s2
    m4 = (means**4).mean(0) + 6 * s2 * (means**2).mean(0) + 3 * s2**2
    for name in ("pc", "edm"):
        x = np.asarray(ns[name].samples, np.float64)
        se = np.sqrt((m4 - var**2) / len(x))
        assert np.all(np.abs(x.var(0) - var) < 4.5 * se), (name, x.var(0), var, se)
    assert abs(float(ns["lik"].logp) - float(ns["exact"])) < 0.01


def check_ot(ns):
    """Sinkhorn converged; its plan (as an operator) has the uniform marginals; sparse routing gives each
    expert at most k = 5 tokens."""
    out, x, y = ns["out"], np.asarray(ns["x"]), np.asarray(ns["y"])
    assert bool(out.converged)
    p = np.asarray(out.plan(), np.float64)
    violation = np.abs(p.sum(1) - 1 / len(x)).sum() + np.abs(p.sum(0) - 1 / len(y)).sum()
    assert violation < 1e-3 and abs(violation - float(out.error)) < 1e-5  # the default tol, on the L1 error
    np.testing.assert_allclose(p.sum(), 1.0, atol=1e-5)
    assert np.all(np.isfinite(np.asarray(ns["grad_x"])))
    plan = np.asarray(ns["route"].plan())
    assert ((plan > 0).sum(0) <= 5).all() and np.all(plan >= 0)
    assert float(ns["div"]) > 0


def check_kernels(ns):
    """The GP posterior mean and variance equal numpy's solve with ``K + 0.01 I``; the Student-t posterior
    has the same mean (its scale mixture changes the variance only)."""
    K = np.asarray(ns["K"], np.float64)
    k = np.asarray(ns["k"].nngp, np.float64)
    y, kss = np.asarray(ns["y"], np.float64), np.asarray(ns["kss"], np.float64)
    A = K + 0.01 * np.eye(len(K))
    mean = k @ np.linalg.solve(A, y)
    var = kss - np.einsum("ij,ji->i", k, np.linalg.solve(A, k.T))
    scale = np.abs(y).max()
    np.testing.assert_allclose(np.asarray(ns["post"].mean), mean, atol=2e-3 * scale)
    np.testing.assert_allclose(np.asarray(ns["post"].var), var, atol=2e-3 * kss.max())
    np.testing.assert_allclose(np.asarray(ns["t"].mean), mean, atol=2e-3 * scale)
    assert np.all(np.isfinite(np.asarray(ns["pred"][0])))


def check_vi(ns):
    """Full-rank VI on N(3, 2^2) per coordinate: mean within 0.15 and sd within 0.15 after 1000 steps (the
    printed ~[3 3] ~[2 2]); the digits BNN classifies better than 90 % of held-out digits."""
    q = ns["state"].q
    np.testing.assert_allclose(np.asarray(q.mean["w"]), 3.0, atol=0.15)
    np.testing.assert_allclose(np.sqrt(np.diag(np.asarray(q.covariance()))), 2.0, atol=0.15)
    assert float(ns["vi"].metrics.accuracy(ns["probs"], ns["ds"].y_test)) > 0.9


def check_sharded(ns):
    """The sharded matrix-free Sinkhorn equals the single-device solve (cost to float32 rounding, potentials
    kept split like ``x``); the BBMM log marginal likelihood equals numpy's exact Gaussian log density within
    5 of its standard errors plus 1e-3 nats, and the CG posterior mean equals numpy's solve."""
    from jaxbayes import ot

    x, y, out = ns["x"], ns["y"], ns["out"]
    ref = ot.sinkhorn(ot.pointcloud(np.asarray(x), np.asarray(y), chunk_size=512), epsilon=0.05)
    np.testing.assert_allclose(float(out.cost), float(ref.cost), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out.f), np.asarray(ref.f), atol=1e-4)
    assert out.f.sharding.spec[0] == "data"
    xs, ys = np.asarray(ns["xs"], np.float64), np.asarray(ns["ys"], np.float64)
    A = np.exp(-0.5 * (xs - xs.T) ** 2) + 0.01 * np.eye(len(xs))
    sign, logdet = np.linalg.slogdet(A)
    exact = -0.5 * ys @ np.linalg.solve(A, ys) - 0.5 * logdet - 0.5 * len(xs) * np.log(2 * np.pi)
    # the standard error of the very estimate README's log_marginal_likelihood returned (recorded while the
    # block ran: same operator, noise, solver and key), instead of a second BBMM solve for it
    (est,) = ns["lml_estimates"]
    assert float(est.lml) == float(ns["lml"])
    se = float(est.stderr)
    assert abs(float(ns["lml"]) - exact) < 5 * se + 1e-3, (float(ns["lml"]), exact, se)
    xt = xs[:5] + 0.05
    mean = np.exp(-0.5 * (xt - xs.T) ** 2) @ np.linalg.solve(A, ys)
    np.testing.assert_allclose(np.asarray(ns["post"].mean), mean, atol=1e-3)


CHECKS = {"parallel.data_parallel": check_parallel, "jax.make_mesh": check_sharded, "sde.pc_sampler": check_sde,
          "ot.sinkhorn": check_ot,
          "gp_posterior": check_kernels, "vi.gaussian_vi": check_vi}


def checker(code):
    found = [check for marker, check in CHECKS.items() if marker in code]
    assert len(found) == 1, "every README block needs exactly one oracle check here"
    return found[0]


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs_and_matches_its_oracle(code, capsys, monkeypatch):
    from jaxbayes.kernels import _gp

    # Record every BBMM estimate whose ``.lml`` log_marginal_likelihood returns (the call is unchanged), so
    # that a check can read its Monte-Carlo standard error without solving again.
    estimates, lml_and_stderr = [], _gp.lml_and_stderr

    def recording(*args, **kwargs):
        estimates.append(lml_and_stderr(*args, **kwargs))
        return estimates[-1]

    monkeypatch.setattr(_gp, "lml_and_stderr", recording)
    ns = {"__name__": "readme"}
    exec(compile(code, "README.md", "exec"), ns)
    capsys.readouterr()
    ns["lml_estimates"] = estimates
    checker(code)(ns)


def test_readme_has_the_two_fresh_machine_commands():
    assert "jaxbayes demo" in README
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    command = re.search(r"# --- README test command.*?\n(.*?)\n# --- end ---", ci, flags=re.S).group(1)
    assert command.strip() in README, "the test command in .ci/run must be exactly README's"
