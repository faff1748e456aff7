"""Entry point of one process started by ``launcher.run_processes`` (not a test module)."""

import importlib
import json
import sys


def main(argv: list[str]) -> None:
    worker, port, num_processes, process_id, devices, out, kwargs = argv
    import jax

    jax.config.update("jax_num_cpu_devices", int(devices))
    import numpy as np

    from jaxbayes.parallel import initialize

    # a hang guard: a loaded host starts slowly
    initialize(f"127.0.0.1:{port}", int(num_processes), int(process_id), initialization_timeout=900)
    module, name = worker.split(":")
    result = getattr(importlib.import_module(module), name)(**json.loads(kwargs))
    np.savez(out, **{k: np.asarray(v) for k, v in result.items()})
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
