#!/bin/sh
# benchmarks.accelerator on a lent GPU machine, which has no network: install the carried wheels of the
# packages its image lacks (``.whl``: distrax, tfp-nightly, ott-jax, jaxopt, dm-tree, gast, decorator, POT,
# tinygp, blackjax), then run the script with its log and results under $OUT. Run from the repository root:
#     BUDGET=500 TESTS="tests/pairwise" sh benchmarks/device_run.sh   # BUDGET (s) caps the benchmark
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import jax; print(jax.__version__, jax.devices())" 2>&1 | tee "$OUT/log.txt"
timeout "${BUDGET:-500}" python3 -m benchmarks.accelerator --out "$OUT/acc" --budget-s "$(( ${BUDGET:-500} - 90 ))" \
  2>&1 | tee -a "$OUT/log.txt"
# TESTS="tests/pairwise ...": also run those tests there on its CPU (8 simulated devices), e.g. to check a
# newer jax and Python than this project's CI has
if [ -n "${TESTS:-}" ]; then
  JAX_PLATFORMS=cpu timeout "${TESTS_BUDGET:-100}" python3 -m pytest $TESTS -q -n 8 -p no:cacheprovider \
    > "$OUT/pytest.txt" 2>&1; tail -25 "$OUT/pytest.txt"
fi
