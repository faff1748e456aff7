"""Run in the neural-tangents venv (jax 0.5.3): kernels of the same networks, timed; `python this in.npz out.npz`."""

import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

data = dict(np.load(sys.argv[1]))
out = {}


def timed(f, *args, repeats=3):
    """The result of ``f(*args)`` after one compiling call, and the median of ``repeats`` timed calls."""
    r = jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return r, np.array(np.median(times))


for key in [k for k in data if k.startswith("mlp_x1_")]:
    n = key.split("_")[-1]
    x1, x2 = data[key], data[f"mlp_x2_{n}"]
    layers = [stax.Dense(1, W_std=1.5, b_std=0.1)]
    for _ in range(4):
        layers += [stax.Relu(), stax.Dense(1, W_std=1.5, b_std=0.1)]
    _, _, kfn = stax.serial(*layers)
    f = jax.jit(lambda a, b: kfn(a, b, ("nngp", "ntk")))
    r, out[f"mlp_time_{n}"] = timed(f, x1, x2)
    out[f"mlp_nngp_{n}"], out[f"mlp_ntk_{n}"] = np.asarray(r[0]), np.asarray(r[1])
if "cnn_x1" in data:
    _, _, kfn = stax.serial(stax.Conv(1, (3, 3), padding="SAME", W_std=1.4, b_std=0.1), stax.Relu(),
                            stax.Conv(1, (3, 3), padding="SAME", W_std=1.4, b_std=0.1), stax.Relu(),
                            stax.GlobalAvgPool(), stax.Dense(1, W_std=1.0, b_std=0.1))
    f = jax.jit(lambda a, b: kfn(a, b, ("nngp", "ntk")))
    # short calls: more repeats for a steadier median (same count as ours)
    r, out["cnn_time"] = timed(f, data["cnn_x1"], data["cnn_x2"], repeats=5)
    out["cnn_nngp"], out["cnn_ntk"] = np.asarray(r[0]), np.asarray(r[1])
for readout in ("flatten", "global_avg_pool"):
    if f"gram_{readout}_x1" not in data:
        continue
    layers = []
    for _ in range(3):
        layers += [stax.Conv(1, (3, 3), padding="SAME", W_std=1.4, b_std=0.1), stax.Relu()]
    top = stax.Flatten() if readout == "flatten" else stax.GlobalAvgPool()
    _, _, kfn = stax.serial(*layers, top, stax.Dense(1, W_std=1.4, b_std=0.1))
    x1, x2 = data[f"gram_{readout}_x1"], data[f"gram_{readout}_x2"]  # float32, as the jaxbayes side
    f = jax.jit(lambda a, b: kfn(a, b, ("nngp", "ntk")))
    out[f"gram_{readout}_temp_mb"] = np.array(f.lower(x1, x2).compile().memory_analysis().temp_size_in_bytes / 2**20)
    r, out[f"gram_{readout}_time"] = timed(f, x1, x2)
    out[f"gram_{readout}_nngp"], out[f"gram_{readout}_ntk"] = np.asarray(r[0]), np.asarray(r[1])
np.savez(sys.argv[2], **out)
