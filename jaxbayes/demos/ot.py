"""OT demo: colour transfer (Sinkhorn vs sparse OT), capacity-limited top-k routing, P^2OT pseudo-labels.

Three parts, all on data bundled with scikit-learn:

1. Colour transfer from ``china.jpg`` to ``flower.jpg`` palettes: subsampled pixels, the entropic plan
   (Sinkhorn) and the sparsity-constrained plan (k non-zeros per target colour) side by side; every pixel
   of the full image takes the barycentric colour of its nearest subsampled pixel.
2. Token-to-expert routing with capacity: digits images are tokens, experts are prototype vectors;
   sparsity-constrained OT (semi-dual, one problem per group of tokens, ``vmap``) gives every expert
   exactly its share of mass from at most ``capacity`` tokens, versus greedy top-1 routing.
3. Imbalanced clustering: prototype-based predictions on an imbalanced digits subset; progressive partial
   OT pseudo-labels at increasing transported mass versus plain argmax labels.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes._progress import progress
from jaxbayes.datasets import load, load_images
from jaxbayes.demos import plotting
from jaxbayes.ot import mass_schedule, pointcloud, pseudo_labels, sinkhorn, sinkhorn_divergence, sparse_ot


def _nearest_map(pixels: jax.Array, centres: jax.Array, values: jax.Array, chunk: int = 8192) -> jax.Array:
    """values[nearest centre] for every pixel, in chunks (memory O(chunk * len(centres)))."""
    pad = (-pixels.shape[0]) % chunk
    padded = jnp.concatenate([pixels, jnp.zeros((pad, 3), pixels.dtype)])

    def block(p):
        d = jnp.sum(p**2, 1)[:, None] - 2 * p @ centres.T + jnp.sum(centres**2, 1)[None]
        return values[jnp.argmin(d, axis=1)]

    out = jax.lax.map(block, padded.reshape(-1, chunk, 3))
    return out.reshape(-1, 3)[: pixels.shape[0]]


def _colour_transfer(outdir: pathlib.Path, n: int, k: int) -> tuple[dict, list[str]]:
    images = load_images()
    src_img, tgt_img = images["china"][::2, ::2], images["flower"][::2, ::2]
    rng = np.random.default_rng(0)
    src_all = jnp.asarray(src_img.reshape(-1, 3))
    tgt_all = jnp.asarray(tgt_img.reshape(-1, 3))
    x = src_all[rng.choice(src_all.shape[0], n, replace=False)]
    y = tgt_all[rng.choice(tgt_all.shape[0], n, replace=False)]

    ent = jax.jit(lambda x, y: sinkhorn(pointcloud(x, y), epsilon=0.01, tol=1e-4,
                                        max_iterations=3000))(x, y)
    plan_s = ent.plan()
    mapped_s = (plan_s @ y) / jnp.sum(plan_s, axis=1, keepdims=True)
    c = pointcloud(x, y).materialize().cost_matrix
    # row sparsity: every source colour goes to at most k target colours (a sparse colour map)
    sp = jax.jit(lambda c: sparse_ot(c, k=k, gamma=0.05 * jnp.mean(c) * n, sparsity="row",
                                     formulation="semi_dual", tol=1e-6, max_iterations=400))(c)
    # the dual's plan violates the marginals (the k-sparse problem is non-convex); its rounding onto the
    # transport polytope keeps the support, so the colour map stays k-sparse and moves all the mass
    rounded = sp.feasible_plan()
    # when the dual's support admits no plan with these marginals, the rounding falls back to a dense plan:
    # then the map uses the dual's k-sparse plan and the report says so
    kept = bool(rounded.kept_support)
    plan_k = rounded.plan() if kept else sp.plan()
    mapped_k = (plan_k @ y) / jnp.maximum(jnp.sum(plan_k, axis=1, keepdims=True), 1e-12)

    full_s = np.asarray(_nearest_map(src_all, x, mapped_s)).reshape(src_img.shape)
    full_k = np.asarray(_nearest_map(src_all, x, mapped_k)).reshape(src_img.shape)
    div = jax.jit(lambda u, v: sinkhorn_divergence(u, v, epsilon=0.01, tol=1e-4).divergence)
    before, after_s, after_k = float(div(x, y)), float(div(mapped_s, y)), float(div(mapped_k, y))

    fig, axes = plotting.figure(4, 1, size=3.2)
    for ax, img, title in zip(axes[0], (src_img, tgt_img, full_s, full_k),
                              ("source (china)", "target palette (flower)", "Sinkhorn transfer",
                               f"sparse OT transfer (k={k})"), strict=True):
        ax.imshow(np.clip(img, 0, 1))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    files = [plotting.save(fig, outdir / "ot_colour_transfer.png")]

    order_x = np.argsort(np.asarray(x @ jnp.array([0.299, 0.587, 0.114])))
    order_y = np.argsort(np.asarray(y @ jnp.array([0.299, 0.587, 0.114])))
    fig, axes = plotting.figure(2, 1, size=3.6)
    sparse_title = f"sparse plan{', rounded' if kept else ' (dual)'} (<= {k}/row)"
    for ax, plan, title in zip(axes[0], (plan_s, plan_k), ("entropic plan", sparse_title), strict=True):
        p = np.asarray(plan)[np.ix_(order_x, order_y)]
        logp = np.log10(np.maximum(p, 1e-30))
        ax.imshow(logp, cmap="magma", aspect="auto", vmin=logp.max() - 4, vmax=logp.max())
        ax.set_title(title + ", log10, sorted by luminance", fontsize=8)
        ax.set_xlabel("target colour")
        ax.set_ylabel("source colour")
    files.append(plotting.save(fig, outdir / "ot_colour_plans.png"))

    nnz = np.asarray((plan_k > 0).sum(axis=1))
    metrics = {
        "colour_pixels": n,
        "sinkhorn_converged": bool(ent.converged),
        "sinkhorn_iterations": int(ent.n_iters),
        "sinkhorn_plan_nonzeros_per_row": float(np.mean(np.asarray(plan_s > 1e-8 * plan_s.max()).sum(1))),
        "sparse_k": k,
        "sparse_max_nonzeros_per_row": int(nnz.max()),
        "sparse_dual_plan_marginal_error": float(sp.marginal_error_a + sp.marginal_error_b),
        "sparse_rounded_plan_marginal_error": float(rounded.marginal_error),
        "sparse_plan_drawn": "rounded (exact marginals)" if kept else "dual (rounding could not keep the support)",
        "sparse_columns_without_mass": int(np.sum(np.asarray(sp.plan()).sum(0) <= 0)),
        "sparse_rounded_kept_support": bool(rounded.kept_support),
        "sparse_status": ["converged (gradient test)", "max_iterations", "stalled"][int(sp.status)],
        # inf when no feasible plan on the support was found within the scaling budget: reported as None
        "sparse_duality_gap": float(sp.gap) if np.isfinite(float(sp.gap)) else None,
        "sparse_transport_cost_drawn_plan": float(jnp.sum(plan_k * c)),
        "divergence_before": before,
        "divergence_after_sinkhorn": after_s,
        "divergence_after_sparse": after_k,
    }
    return metrics, files


def _routing(outdir: pathlib.Path, groups: int, tokens: int, experts: int, capacity: int) -> tuple[dict, list[str]]:
    data = load("digits")
    x = jnp.asarray(data.x_train[: groups * tokens]).reshape(groups, tokens, -1)
    x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    protos = jnp.asarray(data.x_train[-experts:])
    protos = protos / jnp.linalg.norm(protos, axis=-1, keepdims=True)
    logits = 5.0 * x @ protos.T  # (groups, tokens, experts)
    a = jnp.ones(tokens) / tokens
    b = jnp.ones(experts) / experts

    def route(lg):
        return sparse_ot(-lg, a, b, k=capacity, gamma=0.1, formulation="semi_dual", tol=1e-6,
                         max_iterations=300).plan()

    plans = jax.jit(jax.vmap(route))(logits)
    # each token goes to the expert that holds most of its mass (capacity respected by construction)
    ot_assign = np.asarray(jnp.argmax(plans, axis=-1))
    ot_routed = np.asarray(jnp.sum(plans, axis=-1) > 0)
    greedy = np.asarray(jnp.argmax(logits, axis=-1))
    load_greedy = np.stack([np.bincount(g, minlength=experts) for g in greedy])
    kept_greedy = np.minimum(load_greedy, capacity).sum() / (groups * tokens)
    nnz_col = np.asarray((plans > 0).sum(axis=1))  # tokens per expert
    expert_mass = np.asarray(plans.sum(axis=1)) * experts

    fig, axes = plotting.figure(2, 1, size=3.6)
    axes[0][0].bar(np.arange(experts) - 0.2, load_greedy.mean(0), 0.4, label="greedy top-1")
    axes[0][0].bar(np.arange(experts) + 0.2, nnz_col.mean(0), 0.4, label="sparse OT")
    axes[0][0].axhline(capacity, color="k", ls="--", lw=1, label="capacity")
    axes[0][0].set_xlabel("expert")
    axes[0][0].set_ylabel("tokens per group")
    axes[0][0].legend(fontsize=8)
    axes[0][1].imshow(np.asarray(plans[0]).T > 0, aspect="auto", cmap="Greys")
    axes[0][1].set_title("group 0: token -> expert support", fontsize=9)
    axes[0][1].set_xlabel("token")
    axes[0][1].set_ylabel("expert")
    files = [plotting.save(fig, outdir / "ot_routing.png")]
    metrics = {
        "routing_groups": groups,
        "routing_capacity": capacity,
        "routing_max_tokens_per_expert_ot": int(nnz_col.max()),
        "routing_max_tokens_per_expert_greedy": int(load_greedy.max()),
        "routing_expert_mass_min": float(expert_mass.min()),
        "routing_expert_mass_max": float(expert_mass.max()),
        "routing_tokens_kept_greedy_with_capacity": float(kept_greedy),
        "routing_tokens_routed_ot": float(ot_routed.mean()),
        "routing_agreement_with_greedy": float(np.mean(ot_assign == greedy)),
    }
    return metrics, files


def _pseudo_labels(outdir: pathlib.Path, steps: int) -> tuple[dict, list[str]]:
    data = load("digits", standardize=False)
    x, y = np.asarray(data.x_train), np.asarray(data.y_train)
    sizes = [120, 60, 30, 15, 8]  # imbalanced: classes 0..4
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), s, replace=False) for c, s in enumerate(sizes)])
    xs = jnp.asarray(x[idx])
    ys = y[idx]
    # a weak "model": prototypes from 3 labelled examples per class, probabilities by distance
    protos = jnp.stack([jnp.asarray(x[np.flatnonzero(y == c)[-3:]]).mean(0) for c in range(len(sizes))])
    d2 = jnp.sum((xs[:, None] - protos[None]) ** 2, -1)
    log_probs = jax.nn.log_softmax(-d2 / jnp.median(d2) * 8.0, axis=1)
    argmax_acc = float(np.mean(np.asarray(jnp.argmax(log_probs, 1)) == ys))

    solve = jax.jit(lambda lp, rho: pseudo_labels(lp, mass=rho, epsilon=0.05, reg_kl=0.05, tol=1e-6,
                                                  max_iterations=3000))
    rows = []
    for step in progress(range(steps + 1), desc="P2OT mass schedule"):
        rho = float(mass_schedule(step, steps, start=0.2, end=1.0))
        out = solve(log_probs, rho)
        sel = np.asarray(out.selected)
        acc = float(np.mean(np.asarray(out.labels)[sel] == ys[sel])) if sel.any() else float("nan")
        conf = np.asarray(jnp.max(log_probs, 1))
        top = np.argsort(-conf)[: max(int(sel.sum()), 1)]
        conf_acc = float(np.mean(np.asarray(jnp.argmax(log_probs, 1))[top] == ys[top]))
        rows.append((rho, int(sel.sum()), acc, conf_acc, np.asarray(out.cluster_mass)))
    fig, axes = plotting.figure(2, 1, size=3.6)
    axes[0][0].plot([r[0] for r in rows], [r[2] for r in rows], "o-", label="P2OT selected")
    axes[0][0].plot([r[0] for r in rows], [r[3] for r in rows], "s--", label="top-confidence, same count")
    axes[0][0].axhline(argmax_acc, color="k", lw=1, ls=":", label="argmax, all")
    axes[0][0].set_xlabel("transported mass rho")
    axes[0][0].set_ylabel("pseudo-label accuracy")
    axes[0][0].legend(fontsize=8)
    axes[0][1].bar(np.arange(len(sizes)) - 0.2, np.array(sizes) / sum(sizes), 0.4, label="true share")
    axes[0][1].bar(np.arange(len(sizes)) + 0.2, rows[-1][4] / rows[-1][4].sum(), 0.4, label="P2OT (rho=1)")
    axes[0][1].set_xlabel("class")
    axes[0][1].legend(fontsize=8)
    files = [plotting.save(fig, outdir / "ot_pseudo_labels.png")]
    metrics = {
        "pseudo_label_argmax_accuracy": argmax_acc,
        "pseudo_label_mass": [r[0] for r in rows],
        "pseudo_label_selected": [r[1] for r in rows],
        "pseudo_label_accuracy": [r[2] for r in rows],
        "pseudo_label_confidence_baseline_accuracy": [r[3] for r in rows],
    }
    return metrics, files


def demo(outdir: pathlib.Path, *, quick: bool = False) -> dict:
    """Run the three OT demos, write PNGs into ``outdir`` and return metrics (see the module docstring)."""
    outdir = pathlib.Path(outdir)
    metrics: dict = {}
    figures: list[str] = []
    parts = [
        lambda: _colour_transfer(outdir, n=400 if quick else 1500, k=2),
        lambda: _routing(outdir, groups=8 if quick else 32, tokens=32, experts=8, capacity=6),
        lambda: _pseudo_labels(outdir, steps=3 if quick else 8),
    ]
    for part in progress(parts, desc="ot demo"):
        m, f = part()
        metrics.update(m)
        figures.extend(f)
    metrics["figures"] = figures
    return metrics
