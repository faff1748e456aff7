"""Run in the neural-tangents venv (jax 0.5.3): kernels of the same networks, timed; `python this in.npz out.npz`."""

import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

data = dict(np.load(sys.argv[1]))
out = {}
for key in [k for k in data if k.startswith("mlp_x1_")]:
    n = key.split("_")[-1]
    x1, x2 = data[key], data[f"mlp_x2_{n}"]
    layers = [stax.Dense(1, W_std=1.5, b_std=0.1)]
    for _ in range(4):
        layers += [stax.Relu(), stax.Dense(1, W_std=1.5, b_std=0.1)]
    _, _, kfn = stax.serial(*layers)
    f = jax.jit(lambda a, b: kfn(a, b, ("nngp", "ntk")))
    r = f(x1, x2)
    jax.block_until_ready(r)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(f(x1, x2))
        times.append(time.perf_counter() - t0)
    out[f"mlp_nngp_{n}"], out[f"mlp_ntk_{n}"] = np.asarray(r[0]), np.asarray(r[1])
    out[f"mlp_time_{n}"] = np.array(np.median(times))
if "cnn_x1" in data:
    _, _, kfn = stax.serial(stax.Conv(1, (3, 3), padding="SAME", W_std=1.4, b_std=0.1), stax.Relu(),
                            stax.Conv(1, (3, 3), padding="SAME", W_std=1.4, b_std=0.1), stax.Relu(),
                            stax.GlobalAvgPool(), stax.Dense(1, W_std=1.0, b_std=0.1))
    f = jax.jit(lambda a, b: kfn(a, b, ("nngp", "ntk")))
    r = f(data["cnn_x1"], data["cnn_x2"])
    jax.block_until_ready(r)
    times = []
    for _ in range(5):  # short calls: more repeats for a steadier median (same count as ours)
        t0 = time.perf_counter()
        jax.block_until_ready(f(data["cnn_x1"], data["cnn_x2"]))
        times.append(time.perf_counter() - t0)
    out["cnn_nngp"], out["cnn_ntk"] = np.asarray(r[0]), np.asarray(r[1])
    out["cnn_time"] = np.array(np.median(times))
np.savez(sys.argv[2], **out)
