"""jaxbayes.vi vs NumPyro SVI (AutoNormal, AutoMultivariateNormal) and BlackJAX (meanfield_vi, fullrank_vi).

Cases (same model, optimiser, schedule, number of Monte-Carlo samples per step and step count for every impl):

* ``conjugate``: Bayesian linear regression on diabetes (float64). Metric: KL(q || exact posterior); for the
  mean-field impls also the gap to the closed-form mean-field optimum's KL.
* ``logistic``: Bayesian logistic regression on breast_cancer (31 weights). Metric: the ELBO of the final ``q``,
  re-estimated for every impl with the same 4000-sample estimator.
* ``bnn``: digits MLP 64-256-256-10, mean-field, full batch. Metric: test accuracy of the MC predictive.
  jaxbayes uses local reparameterisation; the peers sample weights (one draw per step, their only option).
* ``banana/flow``: normalizing-flow VI (ours: spline couplings; NumPyro: ``AutoIAFNormal``,
  ``AutoBNAFNormal``) and full-rank Gaussian VI (``jaxbayes-fullrank``) on a banana whose log evidence is 0.
  Metric: ``log Z - ELBO``.

In the Gaussian cases every impl evaluates the same log-likelihood function (NumPyro's model adds it with
``numpyro.factor`` after sampling ``w`` from the same Gaussian prior), so the times compare the VI machinery, not
two ways of writing the model: the logistic likelihood written with ``log_sigmoid(l)`` and ``log_sigmoid(-l)``
took 6x longer to differentiate than ``y l - softplus(l)``, which alone made NumPyro's ``Bernoulli(logits)``
look 3x faster per step.

The Gaussian cases start every impl from the same q (mean 0, scale 0.1 for the conjugate model, 1.0 for the
logistic one; BlackJAX's state is built by hand since its init fixes the scale). The BNN case uses each
library's defaults (noted in the table); jaxbayes is also timed with plain weight sampling, the peers' scheme.

Time per step is the median over repeats of one jitted ``lax.scan`` of ``n`` steps, divided by ``n``; the impls
of a case alternate (one run of each per round) so load drift on a shared machine hits them alike.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.harness import record, time_interleaved

BENCH = "vi"


def _scan_steps(step, state, keys):
    return jax.lax.scan(lambda s, k: (step(k, s)[0], None), state, keys)[0]


def _timed_runs_interleaved(runs, num_steps, *, repeats):
    """Time several ``name -> (step, init_state)`` runs of ``num_steps`` jitted steps, alternating the impls
    (see :func:`benchmarks.harness.time_interleaved`). Returns ``name -> (Timing per step, final state)``."""
    keys = jax.random.split(jax.random.key(42), num_steps)
    calls = {}
    for name, (step, init_state) in runs.items():
        run = jax.jit(lambda s, ks, step=step: _scan_steps(step, s, ks))
        calls[name] = lambda run=run, init_state=init_state: run(init_state, keys)
    per_step = lambda t: t._replace(median_s=t.median_s / num_steps, min_s=t.min_s / num_steps,
                                    max_s=t.max_s / num_steps)
    return {name: (per_step(t), state) for name, (t, state) in time_interleaved(calls, repeats=repeats).items()}


def _numpyro_svi(model, guide, optimizer, num_particles, *args):
    from numpyro.infer import SVI, Trace_ELBO

    svi = SVI(model, guide, optimizer, Trace_ELBO(num_particles=num_particles))
    state = svi.init(jax.random.key(0), *args)

    def step(key, st):
        st = st._replace(rng_key=key)
        new, loss = svi.update(st, *args)
        return new, loss

    return svi, state, step


def _to_fullrank(mean, chol):
    from jaxbayes.vi import FullRankNormal

    return FullRankNormal(mean, jnp.log(jnp.diag(chol)), jnp.tril(chol, -1))


def _to_meanfield(mean, scale):
    from jaxbayes.vi import MeanField

    return MeanField(mean, jnp.log(scale))


def _gaussian_cases(name, logp, numpyro_model, d, steps, lr, num_samples, repeats, evaluate, init_scale, *, n_data,
                    peak):
    """Run the six impls (3 libraries x mean-field/full-rank) from the same initial q and return records.

    Work model of one step (the limit columns): per Monte-Carlo draw the likelihood's ``X w`` and its
    transpose in the gradient, ``4 N d`` FLOP; full rank adds ``L eps`` and its gradient, ``4 d^2``."""
    import blackjax
    import numpyro.optim
    from blackjax.vi.fullrank_vi import FRVIState, _unflatten_cholesky
    from blackjax.vi.meanfield_vi import MFVIState
    from numpyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

    from jaxbayes import vi

    sched = optax.cosine_decay_schedule(lr, steps, 1e-3)
    rows = []
    x0 = jnp.zeros(d)
    for family in ("meanfield", "fullrank"):
        work = dict(flops=num_samples * (4 * n_data * d + (4 * d * d if family == "fullrank" else 0)), peak=peak)
        alg = vi.gaussian_vi(logp, optax.adam(sched), family=family, num_samples=num_samples,
                             init_scale=init_scale)
        bj = (blackjax.meanfield_vi if family == "meanfield" else blackjax.fullrank_vi)(
            logp, optax.adam(sched), num_samples=num_samples)
        # BlackJAX's init fixes the scale (exp(-2) mean-field, 1 full-rank); set it to ours instead.
        if family == "meanfield":
            rho = jnp.full(d, jnp.log(init_scale))
            bj_state = MFVIState(x0, rho, optax.adam(sched).init((x0, rho)))
        else:
            chol = jnp.zeros(d * (d + 1) // 2).at[:d].set(jnp.log(init_scale))
            bj_state = FRVIState(x0, chol, optax.adam(sched).init((x0, chol)))
        guide = (AutoNormal if family == "meanfield" else AutoMultivariateNormal)(numpyro_model, init_scale=init_scale)
        svi, np_state, np_step = _numpyro_svi(numpyro_model, guide, numpyro.optim.optax_to_numpyro(optax.adam(sched)),
                                              num_samples)
        timed = _timed_runs_interleaved({"jaxbayes": (alg.step, alg.init(jax.random.key(0), x0)),
                                         "blackjax": (bj.step, bj_state), "numpyro": (np_step, np_state)},
                                        steps, repeats=repeats)
        t, st = timed["jaxbayes"]
        rows.append(record(BENCH, f"{name}/{family}", "jaxbayes", t, steps=steps, **work, **evaluate(st.q)))
        t, st = timed["blackjax"]
        q = (_to_meanfield(st.mu, jnp.exp(st.rho)) if family == "meanfield"
             else _to_fullrank(st.mu, _unflatten_cholesky(st.chol_params, d)))
        rows.append(record(BENCH, f"{name}/{family}", "blackjax", t, steps=steps, **work, **evaluate(q)))
        t, st = timed["numpyro"]
        params = svi.get_params(st)
        if family == "meanfield":
            q = _to_meanfield(params["w_auto_loc"], params["w_auto_scale"])
        else:
            q = _to_fullrank(params["auto_loc"], params["auto_scale_tril"])
        impl = "numpyro-AutoNormal" if family == "meanfield" else "numpyro-AutoMultivariateNormal"
        rows.append(record(BENCH, f"{name}/{family}", impl, t, steps=steps, **work, **evaluate(q)))
    return rows


def conjugate(quick: bool) -> list[dict]:
    import numpyro
    import numpyro.distributions as dist

    from jaxbayes import datasets

    noise_var, prior_prec = 0.5, 1.0
    ds = datasets.load("diabetes")
    x = np.c_[ds.x_train, np.ones(len(ds.x_train))].astype(np.float64)
    y = ds.y_train.astype(np.float64)
    lam = prior_prec * np.eye(x.shape[1]) + x.T @ x / noise_var
    sigma = np.linalg.inv(lam)
    mu = sigma @ x.T @ y / noise_var
    kl_mf = 0.5 * (np.sum(np.log(np.diag(lam))) - np.linalg.slogdet(lam)[1])
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def loglik(w):
        return -0.5 * jnp.sum((yj - xj @ w) ** 2) / noise_var

    def logp(w):
        return loglik(w) - 0.5 * prior_prec * jnp.sum(w**2)

    def model():
        w = numpyro.sample("w", dist.Normal(0.0, 1.0 / np.sqrt(prior_prec)).expand([x.shape[1]]).to_event(1))
        numpyro.factor("y", loglik(w))

    def evaluate(q):
        kl = float(q.kl_mvn(mu, sigma))
        out = {"kl_to_posterior": kl}
        if q.__class__.__name__ == "MeanField":
            out["kl_minus_meanfield_optimum"] = kl - kl_mf
        return out

    steps = 3000 if quick else 6000
    return _gaussian_cases("conjugate", logp, model, x.shape[1], steps, 1e-2, 4, 9 if quick else 15, evaluate,
                           init_scale=0.1, n_data=x.shape[0], peak="float64")


def logistic(quick: bool) -> list[dict]:
    import numpyro
    import numpyro.distributions as dist

    from jaxbayes import datasets, vi

    ds = datasets.load("breast_cancer")
    x = jnp.asarray(np.c_[ds.x_train, np.ones(len(ds.x_train))])
    y = jnp.asarray(ds.y_train, jnp.float32)

    def loglik(w):
        logits = x @ w
        return jnp.sum(y * logits - jax.nn.softplus(logits))

    def logp(w):
        return loglik(w) - 0.5 * jnp.sum(w**2)

    def model():
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
        numpyro.factor("y", loglik(w))

    elbo_fn = jax.jit(lambda q: vi.elbo(jax.random.key(5), q, logp, num_samples=4000, stl=False))

    def evaluate(q):
        return {"final_elbo": float(elbo_fn(q))}

    steps = 1000 if quick else 3000
    return _gaussian_cases("logistic", logp, model, x.shape[1], steps, 2e-2, 4, 9 if quick else 15, evaluate,
                           init_scale=1.0, n_data=x.shape[0], peak="float32")


def bnn(quick: bool) -> list[dict]:
    import blackjax
    import flax.linen as nn
    import numpyro
    import numpyro.distributions as dist
    import numpyro.optim
    from numpyro.infer.autoguide import AutoNormal

    from jaxbayes import datasets, vi

    ds = datasets.load("digits", standardize=False)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    xt, yt = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)
    n = len(y)
    sizes = [(64, 256), (256, 256), (256, 10)]

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, h):
            h = nn.relu(nn.Dense(256)(h))
            h = nn.relu(nn.Dense(256)(h))
            return nn.Dense(10)(h)

    module = MLP()
    steps = 100 if quick else 500
    lr = 3e-3
    rows = []

    def accuracy(probs):
        return float(vi.metrics.accuracy(probs, yt))

    def forward(p, h):
        return module.apply({"params": p}, h)

    params0 = module.init(jax.random.key(0), x[:1])["params"]

    def logp(p):
        ll = jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(forward(p, x)), y[:, None], 1))
        return ll + sum(jnp.sum(jax.scipy.stats.norm.logpdf(v)) for v in jax.tree.leaves(p))

    def mc_probs(draws):
        return jnp.mean(jax.vmap(lambda p: jax.nn.softmax(forward(p, xt)))(draws), axis=0)

    def model(h, labels=None):
        ws = []
        for i, (a, b) in enumerate(sizes):
            w = numpyro.sample(f"w{i}", dist.Normal(0.0, 1.0).expand([a, b]).to_event(2))
            c = numpyro.sample(f"b{i}", dist.Normal(0.0, 1.0).expand([b]).to_event(1))
            ws.append((w, c))
        for i, (w, c) in enumerate(ws):
            h = h @ w + c
            if i < len(ws) - 1:
                h = jax.nn.relu(h)
        numpyro.sample("y", dist.Categorical(logits=h), obs=labels)

    # jaxbayes: local reparameterisation and plain weight sampling, full batch; the four impls alternate
    alg = vi.bnn_vi(module, optax.adam(lr), num_data=n, prior_scale=1.0, init_scale=1e-3)
    alg_s = vi.bnn_vi(module, optax.adam(lr), num_data=n, prior_scale=1.0, init_scale=1e-3, method="sample")
    bj = blackjax.meanfield_vi(logp, optax.adam(lr), num_samples=1)
    guide = AutoNormal(model)
    svi, st0, step = _numpyro_svi(model, guide, numpyro.optim.optax_to_numpyro(optax.adam(lr)), 1, x, y)
    timed = _timed_runs_interleaved({
        "local": (lambda k, s: alg.step(k, s, (x, y)), alg.init(jax.random.key(0), x[:1])),
        "sample": (lambda k, s: alg_s.step(k, s, (x, y)), alg_s.init(jax.random.key(0), x[:1])),
        "blackjax": (bj.step, bj.init(params0)),
        "numpyro": (step, st0)}, steps, repeats=3)

    # work model of one full-batch step: a weight draw's forward pass is 2 N P FLOP (P weights), with its
    # gradient 6 N P; local reparameterisation runs the mean and the variance matmuls, 12 N P
    n_weights = sum(a * b for a, b in sizes)
    sampled = dict(flops=6.0 * n * n_weights)
    t, st = timed["local"]
    probs = jax.jit(lambda s: alg.predict(jax.random.key(1), s, xt, num_samples=16, chunk_size=8))(st)
    rows.append(record(BENCH, "bnn/meanfield", "jaxbayes", t, steps=steps, flops=12.0 * n * n_weights,
                       test_accuracy=accuracy(probs),
                       note="local reparameterisation (per-example noise)"))
    t, st = timed["sample"]
    probs = jax.jit(lambda s: alg_s.predict(jax.random.key(1), s, xt, num_samples=16, chunk_size=8))(st)
    rows.append(record(BENCH, "bnn/meanfield", "jaxbayes-weight-sampling", t, steps=steps, **sampled,
                       test_accuracy=accuracy(probs), note="method='sample' (one weight draw per step)"))
    t, st = timed["blackjax"]
    draws = bj.sample(jax.random.key(1), st, 16)
    rows.append(record(BENCH, "bnn/meanfield", "blackjax", t, steps=steps, **sampled,
                       test_accuracy=accuracy(jax.jit(mc_probs)(draws)),
                       note="default init: mu = flax init, sigma = exp(-2)"))
    t, st = timed["numpyro"]
    params = svi.get_params(st)
    from numpyro.infer import Predictive

    # weight draws from the guide, then the MC predictive probabilities
    wdraws = Predictive(guide, params=params, num_samples=16)(jax.random.key(1), xt)

    def probs_from(draw):
        h = xt
        for i in range(3):
            h = h @ draw[f"w{i}"] + draw[f"b{i}"]
            if i < 2:
                h = jax.nn.relu(h)
        return jax.nn.softmax(h)

    probs = jnp.mean(jax.vmap(probs_from)({k: v for k, v in wdraws.items() if k[0] in "wb"}), axis=0)
    rows.append(record(BENCH, "bnn/meanfield", "numpyro-AutoNormal", t, steps=steps, **sampled,
                       test_accuracy=accuracy(probs), note="defaults: init_to_median (zeros), init_scale 0.1"))
    return rows


def _banana(t):
    """x1 ~ N(0, 1), x2 | x1 ~ N(x1^2 - 1, 0.5^2): normalised, log Z = 0."""
    return -0.5 * t[0] ** 2 - 0.5 * ((t[1] - t[0] ** 2 + 1) / 0.5) ** 2 - jnp.log(0.5) - jnp.log(2 * jnp.pi)


def flows(quick: bool) -> list[dict]:
    """Flow VI on the banana (log Z = 0): jaxbayes's spline-coupling ``Flow`` and full-rank Gaussian VI vs
    NumPyro's ``AutoIAFNormal`` and ``AutoBNAFNormal``, same target, optimiser, schedule, 16 draws per step and
    step count. Metric: ``gap = log Z - ELBO = KL(q || p)``, the ELBO re-estimated with 20 000 draws of each
    final ``q`` (``gap_se`` its Monte-Carlo error)."""
    import numpyro
    import numpyro.distributions as dist
    import numpyro.optim
    from numpyro.infer.autoguide import AutoBNAFNormal, AutoIAFNormal
    from numpyro.infer.initialization import init_to_value

    from jaxbayes import vi

    steps, num_samples, n_eval = (2000 if quick else 5000), 16, 20_000
    sched = optax.cosine_decay_schedule(1e-2, steps, 0.05)

    def model():
        x = numpyro.sample("x", dist.ImproperUniform(dist.constraints.real_vector, (), (2,)))
        numpyro.factor("banana", _banana(x))

    runs, finals = {}, {}
    for name, family in [("jaxbayes", vi.Flow(hidden_sizes=(64, 64))), ("jaxbayes-fullrank", "fullrank")]:
        alg = vi.gaussian_vi(_banana, optax.adam(sched), family=family, num_samples=num_samples, init_scale=1.0)
        runs[name] = (alg.step, alg.init(jax.random.key(0), jnp.zeros(2)))
        finals[name] = lambda st, k: (lambda th: _banana_gap(th, jax.vmap(st.q.log_prob)(th)))(
            st.q.sample(k, n_eval))
    init = init_to_value(values={"x": jnp.zeros(2)})
    for name, guide in [("numpyro-AutoIAFNormal", AutoIAFNormal(model, num_flows=4, hidden_dims=[64, 64],
                                                                 init_loc_fn=init)),
                        ("numpyro-AutoBNAFNormal", AutoBNAFNormal(model, num_flows=2, hidden_factors=[8, 8],
                                                                  init_loc_fn=init))]:
        svi, st0, step = _numpyro_svi(model, guide, numpyro.optim.optax_to_numpyro(optax.adam(sched)),
                                      num_samples)
        runs[name] = (step, st0)

        def final(st, k, svi=svi, guide=guide):
            post = guide.get_posterior(svi.get_params(st))
            th, inter = post.sample_with_intermediates(k, (n_eval,))  # BNAF has no inverse: log q from the path
            return _banana_gap(th, post.log_prob(th, inter))

        finals[name] = final
    timed = _timed_runs_interleaved(runs, steps, repeats=3)
    rows = []
    for name, (t, st) in timed.items():
        gap, se = finals[name](st, jax.random.key(7))
        rows.append(record(BENCH, "banana/flow", name, t, steps=steps, gap=gap, gap_se=se))
    return rows


def _banana_gap(thetas, log_q):
    w = np.asarray(jax.vmap(_banana)(thetas) - log_q)
    return float(-w.mean()), float(w.std() / np.sqrt(len(w)))


def run(outdir: pathlib.Path, *, quick: bool) -> list[dict]:
    """All cases; the conjugate case runs in float64 (its KL targets are below float32 resolution)."""
    with jax.enable_x64(True):
        rows = conjugate(quick)
    rows += logistic(quick)
    rows += bnn(quick)
    rows += flows(quick)
    _plot(outdir, rows)
    return rows


def _plot(outdir: pathlib.Path, rows: list[dict]) -> None:
    from jaxbayes.demos.plotting import figure, save

    cases = sorted({r["case"] for r in rows})
    fig, axes = figure(ncols=1, size=5.0)
    ax = axes[0][0]
    labels, ratios = [], []
    for case in cases:
        group = [r for r in rows if r["case"] == case]
        ref = next(r["time_s"] for r in group if r["impl"] == "jaxbayes")
        for r in group:
            if r["impl"] != "jaxbayes":
                labels.append(f"{case}\n{r['impl']}")
                ratios.append(r["time_s"] / ref)
    ax.barh(np.arange(len(ratios)), ratios)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(np.arange(len(ratios)), labels, fontsize=6)
    ax.set(xlabel="peer time per step / jaxbayes time per step", xscale="log")
    save(fig, outdir / "vi_time_ratios.png")
