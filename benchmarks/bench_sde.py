"""jaxbayes.sde benchmarks: sample quality per NFE, per-step overhead, and jitted likelihood vs a scipy loop.

(a) Every sampler on two 8-D Gaussian mixtures with exact scores (a ring of narrow 0.1-wide modes, and a
    standard mixture with random means and anisotropic covariances), per NFE budget. The sample distance is
    the unbiased MMD^2 to fresh data with a sum of Gaussian kernels (bandwidths from the median pairwise
    distance down to 1/16 of it); its null distribution is the same statistic between independent exact
    sample sets of the same size, and a sampler "reaches the null" at the smallest budget from which on its
    MMD^2 stays inside the null's 95% quantile. Sliced W2 (dominated by mode-weight noise) and the stricter
    cross-entropy gap |mean(-log p(samples)) - mean(-log p(data))| (sees a 1-2% error in the width of a mode)
    are reported alongside, the latter with its own null quantile.
(b) Fixed-step Euler probability-flow and Euler-Maruyama samplers vs a hand-written batched ``lax.scan``
    loop and vs diffrax's ``Euler`` on the same ODE/SDE, batch and steps, timed round-robin; the batched
    score evaluations alone give the floor that no Euler loop can beat.
(c) ``log_likelihood`` (jit + vmap, diffrax Tsit5, exact trace) vs the approach of Song et al.'s code:
    scipy's RK45 on the host calling a jitted drift/divergence, same tolerances, same oracle, batch 16 and 64,
    with the time of one jitted batched right-hand side (``rhs_call_s``) to show how much of each is compute.
"""

from __future__ import annotations

import pathlib
from functools import partial

import diffrax
import jax
import jax.numpy as jnp
import lineax
import numpy as np
from scipy import integrate

from benchmarks.harness import record, time_fn, time_interleaved
from jaxbayes import datasets
from jaxbayes.demos.plotting import figure, save
from jaxbayes.parallel import sample_keys
from jaxbayes.sde import (
    VPSDE,
    ddim_sampler,
    dpm_solver_pp_2m,
    edm_sampler,
    gaussian_score,
    gmm_denoiser,
    gmm_logpdf,
    gmm_score,
    log_likelihood,
    ode_sampler,
    pc_sampler,
    sample_batch,
)

DIM = 8


def _sw(a, b, dirs):
    levels = (np.arange(200) + 0.5) / 200
    pa = np.quantile(np.asarray(a) @ dirs.T, levels, axis=0)
    pb = np.quantile(np.asarray(b) @ dirs.T, levels, axis=0)
    return float(np.sqrt(np.mean((pa - pb) ** 2)))


@jax.jit
def _kernel_row_sums(x, y, bandwidths):
    d2 = jnp.maximum(jnp.sum(x**2, 1)[:, None] + jnp.sum(y**2, 1)[None] - 2 * x @ y.T, 0.0)
    return jnp.sum(jnp.exp(-d2[None] / (2 * bandwidths[:, None, None] ** 2)), axis=(0, 2))


def _mmd2(a, b, bandwidths):
    """Unbiased MMD^2 with the sum of Gaussian kernels over ``bandwidths`` (a characteristic kernel); row sums
    on the device in float32, the total in float64."""
    a, b, h = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), jnp.asarray(bandwidths, jnp.float32)
    m, k = a.shape[0], len(bandwidths)
    saa = np.sum(np.asarray(_kernel_row_sums(a, a, h), np.float64)) - m * k
    sbb = np.sum(np.asarray(_kernel_row_sums(b, b, h), np.float64)) - m * k
    sab = np.sum(np.asarray(_kernel_row_sums(a, b, h), np.float64))
    return float((saa + sbb) / (m * (m - 1)) - 2 * sab / m**2)


def _samplers(sde, score, den):
    """name -> (sampler(key, nfe) per sample, steps for an NFE budget, NFE actually used)."""
    return {
        "euler_maruyama": (lambda n: lambda k: pc_sampler(k, score, sde, (DIM,), predictor="euler_maruyama",
                                                          corrector="none", num_steps=n, denoise=False), 1),
        "pc_reverse+langevin": (lambda n: lambda k: pc_sampler(k, score, sde, (DIM,), num_steps=max(n // 2, 1),
                                                               snr=0.05, denoise=False), 2),
        "ode_euler": (lambda n: lambda k: ode_sampler(k, score, sde, (DIM,), solver="euler", num_steps=n), 1),
        "ode_heun": (lambda n: lambda k: ode_sampler(k, score, sde, (DIM,), solver="heun",
                                                     num_steps=max(n // 2, 1)), 2),
        "ode_rk4": (lambda n: lambda k: ode_sampler(k, score, sde, (DIM,), solver="rk4", num_steps=max(n // 4, 1)), 4),
        "ddim": (lambda n: lambda k: ddim_sampler(k, score, sde, (DIM,), num_steps=n), 1),
        "dpm_solver_pp_2m": (lambda n: lambda k: dpm_solver_pp_2m(k, score, sde, (DIM,), num_steps=n), 1),
        # EDM's own defaults (sigma_min 0.002, sigma_max 80, rho 7): sigma_max is 20x the data's radius.
        "edm_heun": (lambda n: lambda k: edm_sampler(k, den, (DIM,), num_steps=(n + 1) // 2), 2),
    }


def _gmm_cases():
    """The narrow-mode ring (discretisation error shows as extra spread around each 0.1-wide mode) and a
    standard, moderately separated mixture (random means N(0, I), random anisotropic covariances)."""
    ring = datasets.ring_mixture(8, dim=DIM, radius=4.0, scale=0.1)
    means = jax.random.normal(jax.random.key(7), (8, DIM))
    a = 0.25 * jax.random.normal(jax.random.key(8), (8, DIM, DIM))
    covs = 0.25 * jnp.eye(DIM) + 0.5 * jnp.einsum("kij,klj->kil", a, a)
    std = datasets.GaussianMixture(jnp.full((8,), 1 / 8), means, covs)
    return {f"ring{DIM}d_scale0.1": ring, f"gmm{DIM}d_standard": std}


def _quality_case(outdir, quick, label, mix):
    sde = VPSDE()
    score = gmm_score(sde, mix.weights, mix.means, mix.covs)
    den = gmm_denoiser(mix.weights, mix.means, mix.covs)
    n = 4000 if quick else 8000
    dirs = np.array(jax.random.normal(jax.random.key(0), (128, DIM)))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    nll = jax.jit(jax.vmap(lambda u: -gmm_logpdf(sde, mix.weights, mix.means, mix.covs, u, 0.0)))
    ref = np.asarray(datasets.gaussian_mixture(jax.random.key(1), n, mix)[0])
    ref_nll = float(jnp.mean(nll(ref)))
    # Kernel bandwidths from the median pairwise distance down to 1/16 of it: global shape to mode width.
    med = float(np.median(np.linalg.norm(ref[:500, None] - ref[None, :500], axis=-1)))
    bandwidths = tuple(med * 2.0 ** -np.arange(5))
    nulls = [np.asarray(datasets.gaussian_mixture(jax.random.key(100 + i), n, mix)[0]) for i in range(20)]
    null = np.array([_mmd2(ref, other, bandwidths) for other in nulls])
    null_sw = np.array([_sw(ref, other, dirs) for other in nulls])
    null_ce = np.array([abs(float(jnp.mean(nll(other))) - ref_nll) for other in nulls])
    threshold, threshold_sw, threshold_ce = (float(np.quantile(v, 0.95)) for v in (null, null_sw, null_ce))
    budgets = [10, 20, 35, 100, 250, 500, 1000] if quick else [6, 10, 16, 20, 26, 35, 50, 80, 100, 200, 300,
                                                                   500, 750, 1000]
    case = f"{label}_n{n}"
    rows, curves = [], {}
    for name, (make, _) in _samplers(sde, score, den).items():
        curve = []
        for budget in budgets:
            sampler = make(budget)
            fn = jax.jit(lambda k, f=sampler: sample_batch(f, k, n))
            out = fn(jax.random.key(2))
            mmd = _mmd2(out.samples, ref, bandwidths)
            sw = _sw(out.samples, ref, dirs)
            ce = abs(float(jnp.mean(nll(out.samples))) - ref_nll)
            nfe = int(out.nfe[0])
            curve.append((nfe, mmd, ce, mmd <= threshold, ce <= threshold_ce, sw))
            rows.append(record("sde_quality_per_nfe", case, "jaxbayes", sampler=name, nfe=nfe, mmd2=mmd,
                               sliced_w2=sw, cross_entropy_gap=ce, reached_null_mmd=bool(mmd <= threshold),
                               reached_null_ce=bool(ce <= threshold_ce)))
        curves[name] = curve
    # A sampler "reaches the null" at the smallest budget from which on every larger budget is inside the
    # null's 95% quantile (one lucky draw at a small budget does not count).
    for name, curve in curves.items():
        first = {}
        for col, key in ((3, "mmd"), (4, "ce")):
            ok = [c[col] for c in curve]
            first[key] = next((curve[i][0] for i in range(len(curve)) if all(ok[i:])), None)
        rows.append(record("sde_quality_summary", case, "jaxbayes", sampler=name,
                           min_nfe_to_null_mmd=first["mmd"], min_nfe_to_null_cross_entropy=first["ce"],
                           null_mmd2_q95=threshold, null_sliced_w2_q95=threshold_sw, null_ce_q95=threshold_ce,
                           kernel_bandwidths=", ".join(f"{h:.3g}" for h in bandwidths)))
    fig, axes = figure(2, size=4.5)
    for ax, idx, ylabel, thr in ((axes[0][0], 1, "MMD^2 to data", threshold),
                                 (axes[0][1], 2, "cross-entropy gap (nats)", threshold_ce)):
        for name, curve in curves.items():
            ax.plot([c[0] for c in curve], [max(c[idx], 1e-6) for c in curve], marker="o", ms=3, label=name)
        ax.axhline(thr, color="k", ls="--", lw=0.8, label="null 95%")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel(ylabel)
        ax.set_title(label, fontsize=8)
    axes[0][1].legend(fontsize=6)
    save(fig, outdir / f"sde_quality_per_nfe_{label}.png")
    return rows


def _quality(outdir, quick):
    return [row for label, mix in _gmm_cases().items() for row in _quality_case(outdir, quick, label, mix)]


def _overhead(quick):
    batch, steps = (1024, 200) if quick else (4096, 1000)
    sde = VPSDE()
    mu = jnp.linspace(-1.0, 1.0, DIM)
    score = gaussian_score(sde, mu, jnp.diag(jnp.linspace(0.2, 1.0, DIM)))
    key = jax.random.key(0)
    x_T = jax.random.normal(key, (batch, DIM))
    ts = jnp.linspace(sde.T, sde.eps, steps + 1)
    bscore = jax.vmap(score, in_axes=(0, None))

    @jax.jit
    def ours_ode(x):
        return jax.vmap(lambda x0: ode_sampler(None, score, sde, (DIM,), solver="euler", num_steps=steps,
                                               x_init=x0).samples)(x)

    @jax.jit
    def raw_ode(x):
        def body(x, i):
            t, dt = ts[i], ts[i + 1] - ts[i]
            return x + dt * (sde.drift_coeff(t) * x - 0.5 * sde.diffusion(t) ** 2 * bscore(x, t)), None

        return jax.lax.scan(body, x, jnp.arange(steps))[0]

    @jax.jit
    def score_only(x):  # the score evaluations alone: a floor for any Euler loop
        return jax.lax.scan(lambda x, i: (x + 1e-3 * bscore(x, ts[i]), None), x, jnp.arange(steps))[0]

    @jax.jit
    def diffrax_ode(x):
        term = diffrax.ODETerm(lambda t, y, args: sde.drift_coeff(t) * y - 0.5 * sde.diffusion(t) ** 2 * bscore(y, t))
        sol = diffrax.diffeqsolve(term, diffrax.Euler(), t0=sde.T, t1=sde.eps, dt0=(sde.eps - sde.T) / steps, y0=x,
                                  saveat=diffrax.SaveAt(t1=True), max_steps=steps + 1)
        return sol.ys[-1]

    @jax.jit
    def ours_em(k):
        return sample_batch(lambda kk: pc_sampler(kk, score, sde, (DIM,), predictor="euler_maruyama",
                                                  corrector="none", num_steps=steps, denoise=False), k, batch).samples

    @jax.jit
    def raw_em(k):
        keys = sample_keys(k, batch)
        x = jax.vmap(lambda kk: jax.random.normal(jax.random.split(kk)[0], (DIM,)))(keys)

        def body(x, i):
            t, dt = ts[i], ts[i + 1] - ts[i]
            z = jax.random.normal(jax.random.fold_in(k, i), x.shape)
            drift = sde.drift_coeff(t) * x - sde.diffusion(t) ** 2 * bscore(x, t)
            return x + dt * drift + sde.diffusion(t) * jnp.sqrt(-dt) * z, None

        return jax.lax.scan(body, x, jnp.arange(steps))[0]

    @jax.jit
    def diffrax_em(k):
        # The reverse SDE in s = T - t (forward time for the Brownian path), the state flattened so the
        # diffusion is a diagonal linear operator; Euler on drift + diffusion terms.
        x = jax.random.normal(k, (batch * DIM,))
        span = sde.T - sde.eps

        def drift(s, y, args):
            t = sde.T - s
            u = y.reshape(batch, DIM)
            return -(sde.drift_coeff(t) * u - sde.diffusion(t) ** 2 * bscore(u, t)).ravel()

        bm = diffrax.UnsafeBrownianPath(shape=(batch * DIM,), key=jax.random.fold_in(k, 1))
        noise = diffrax.ControlTerm(
            lambda s, y, args: lineax.DiagonalLinearOperator(sde.diffusion(sde.T - s) * jnp.ones_like(y)), bm)
        sol = diffrax.diffeqsolve(diffrax.MultiTerm(diffrax.ODETerm(drift), noise), diffrax.Euler(), t0=0.0,
                                  t1=span, dt0=span / steps, y0=x, saveat=diffrax.SaveAt(t1=True),
                                  max_steps=steps + 1, adjoint=diffrax.ForwardMode())
        return sol.ys[-1].reshape(batch, DIM)

    rows = []
    case = f"batch{batch}_steps{steps}_d{DIM}"
    # work model: per sample and step the Gaussian score's d x d matvec (2 d^2 FLOP) and about 10 d for the
    # drift, noise and update; the state (batch x d float32) stays in cache, so the limit is per-step latency,
    # which the FLOP fraction makes visible
    work = dict(flops=float(steps * batch * (2 * DIM**2 + 10 * DIM)))
    # Interleaved repeats (the machine is shared): each round times every implementation once.
    ode_fns = {"jaxbayes": ours_ode, "lax.scan": raw_ode, "diffrax": diffrax_ode, "score evals only": score_only}
    em_fns = {"jaxbayes": ours_em, "lax.scan": raw_em, "diffrax": diffrax_em}
    t_ode = {name: t for name, (t, _) in time_interleaved({n: partial(f, x_T) for n, f in ode_fns.items()},
                                                          repeats=7).items()}
    t_em = {name: t for name, (t, _) in time_interleaved({n: partial(f, key) for n, f in em_fns.items()},
                                                         repeats=7).items()}
    out_raw = raw_ode(x_T)
    rows.append(record("sde_step_overhead", "pf_ode_euler_" + case, "jaxbayes", t_ode["jaxbayes"], **work,
                       ratio_vs_lax_scan=t_ode["jaxbayes"].median_s / t_ode["lax.scan"].median_s,
                       speedup_vs_diffrax=t_ode["diffrax"].median_s / t_ode["jaxbayes"].median_s,
                       max_abs_diff_vs_lax_scan=float(jnp.max(jnp.abs(ours_ode(x_T) - out_raw)))))
    rows.append(record("sde_step_overhead", "pf_ode_euler_" + case, "lax.scan", t_ode["lax.scan"], **work))
    rows.append(record("sde_step_overhead", "pf_ode_euler_" + case, "diffrax", t_ode["diffrax"], **work,
                       max_abs_diff_vs_lax_scan=float(jnp.max(jnp.abs(diffrax_ode(x_T) - out_raw)))))
    rows.append(record("sde_step_overhead", "pf_ode_euler_" + case, "score evals only", t_ode["score evals only"],
                       note="lower bound for any Euler loop: the batched score evaluations alone"))
    rows.append(record("sde_step_overhead", "euler_maruyama_" + case, "jaxbayes", t_em["jaxbayes"], **work,
                       ratio_vs_lax_scan=t_em["jaxbayes"].median_s / t_em["lax.scan"].median_s,
                       speedup_vs_diffrax=t_em["diffrax"].median_s / t_em["jaxbayes"].median_s,
                       note="per-sample keys, noise drawn 16 steps per fold_in; peers: one batched draw per step"))
    rows.append(record("sde_step_overhead", "euler_maruyama_" + case, "lax.scan", t_em["lax.scan"], **work))
    rows.append(record("sde_step_overhead", "euler_maruyama_" + case, "diffrax", t_em["diffrax"], **work,
                       note="Euler on MultiTerm(ODETerm, ControlTerm) with UnsafeBrownianPath"))
    return rows


def _likelihood(quick):
    sde = VPSDE()
    mix = datasets.ring_mixture(4, dim=DIM, radius=2.0, scale=0.6)
    score = gmm_score(sde, mix.weights, mix.means, mix.covs)
    prior = lambda z: gmm_logpdf(sde, mix.weights, mix.means, mix.covs, z, sde.T)
    ours = jax.jit(jax.vmap(lambda u: log_likelihood(None, score, sde, u, trace="exact", rtol=1e-5, atol=1e-5,
                                                     prior_logp_fn=prior)))

    # Song et al.'s approach: scipy RK45 on the host, a jitted batched drift + exact divergence per call.
    def v(u, t):
        return sde.reverse_drift(score, u, t, ode=True)

    @jax.jit
    def rhs(y, t):
        xs = y[:, :DIM]
        dx = jax.vmap(v, in_axes=(0, None))(xs, t)
        div = jax.vmap(lambda u: jnp.trace(jax.jacfwd(lambda w: v(w, t))(u)))(xs)
        return jnp.concatenate([dx, div[:, None]], axis=1)

    def scipy_loglik(x):
        batch = x.shape[0]
        y0 = np.concatenate([x, np.zeros((batch, 1))], axis=1).ravel()
        fun = lambda t, y: np.asarray(rhs(jnp.asarray(y.reshape(batch, DIM + 1), jnp.float32), t),
                                      np.float64).ravel()
        sol = integrate.solve_ivp(fun, (sde.eps, sde.T), y0, rtol=1e-5, atol=1e-5, method="RK45")
        yT = sol.y[:, -1].reshape(batch, DIM + 1)
        return np.asarray(jax.vmap(prior)(jnp.asarray(yT[:, :DIM], jnp.float32))) + yT[:, DIM], sol.nfev

    rows = []
    for batch in (16, 64):
        x = np.asarray(datasets.gaussian_mixture(jax.random.key(0), batch, mix)[0])
        exact = np.asarray(jax.vmap(lambda u: gmm_logpdf(sde, mix.weights, mix.means, mix.covs, u, sde.eps))(x))
        y = jnp.asarray(np.concatenate([x, np.zeros((batch, 1))], axis=1), jnp.float32)
        t_rhs, _ = time_fn(rhs, y, 0.5, repeats=20)
        lp_sp, nfev = scipy_loglik(x)
        out = ours(jnp.asarray(x))
        timed = time_interleaved({"jaxbayes": lambda: ours(jnp.asarray(x)).logp, "scipy": partial(scipy_loglik, x)},
                                 repeats=9)
        t_ours, t_sp = timed["jaxbayes"][0], timed["scipy"][0].median_s
        nfe = np.asarray(out.nfe)
        case = f"gmm{DIM}d_batch{batch}_exact_trace"
        rows += [
            record("sde_likelihood", case, "jaxbayes", t_ours, speedup_vs_scipy=t_sp / t_ours.median_s,
                   max_abs_err_nats=float(np.max(np.abs(np.asarray(out.logp) - exact))), nfe_max=int(nfe.max()),
                   nfe_mean=float(nfe.mean()),
                   rhs_compute_share=float(nfe.max() * t_rhs.median_s / t_ours.median_s)),
            record("sde_likelihood", case, "scipy", None, time_s=t_sp, nfev=int(nfev),
                   max_abs_err_nats=float(np.max(np.abs(lp_sp - exact))),
                   rhs_call_s=t_rhs.median_s, rhs_compute_share=float(nfev * t_rhs.median_s / t_sp)),
        ]
    return rows


def run(outdir: pathlib.Path, *, quick: bool) -> list[dict]:
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    return [*_quality(outdir, quick), *_overhead(quick), *_likelihood(quick)]
