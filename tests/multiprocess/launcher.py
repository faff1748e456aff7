"""Start N real JAX processes on 127.0.0.1, run a worker function in each and collect the results.

Usage in a test::

    from tests.multiprocess.launcher import run_processes
    results = run_processes("tests.multiprocess.workers_parallel:sharded_sum", num_processes=2)

The worker is ``module:function``; it is called as ``function(**kwargs)`` after
``jaxbayes.parallel.initialize(coordinator, num_processes, process_id)`` with ``devices_per_process``
CPU devices in each process (gloo collectives), and returns a dict of arrays. ``run_processes`` returns
one ``dict[str, np.ndarray]`` per process, in process order, and fails with every worker's stderr.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(
    worker: str,
    *,
    num_processes: int = 2,
    devices_per_process: int = 4,
    timeout: float = 1800.0,
    attempts: int = 3,
    **kwargs,
) -> list[dict[str, np.ndarray]]:
    """Run ``worker`` (``"module:function"``) in ``num_processes`` processes and return their outputs.

    The coordinator's port is picked free and released before process 0 binds it, so another program can
    take it in between: a run whose coordinator failed to bind is retried on a new port (``attempts`` in
    all). ``timeout`` only guards against a hang; it is not a speed requirement.
    """
    for attempt in range(attempts):
        try:
            return _run_once(worker, num_processes, devices_per_process, timeout, kwargs)
        except _PortTaken:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


class _PortTaken(AssertionError):
    """The coordinator could not bind its port."""


_BIND_ERRORS = ("Address already in use", "Failed to bind", "failed to bind")


def _run_once(worker, num_processes, devices_per_process, timeout, kwargs):
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        env.pop("XLA_FLAGS", None)
        procs = []
        for pid in range(num_processes):
            out = Path(tmp) / f"result_{pid}.npz"
            cmd = [sys.executable, "-m", "tests.multiprocess.worker", worker, str(port), str(num_processes),
                   str(pid), str(devices_per_process), str(out), json.dumps(kwargs)]
            procs.append((subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True), out))
        errors = []
        for pid, (proc, _) in enumerate(procs):
            try:
                _, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                for p, _ in procs:
                    p.kill()
                _, err = proc.communicate()
                errors.append(f"process {pid} timed out after {timeout}s\n{err}")
                continue
            if proc.returncode:
                errors.append(f"process {pid} exited with {proc.returncode}\n{err}")
        if errors and any(marker in e for e in errors for marker in _BIND_ERRORS):
            raise _PortTaken("\n---\n".join(errors))
        if errors:
            raise AssertionError("multi-process run failed:\n" + "\n---\n".join(errors))
        results = []
        for _, out in procs:
            with np.load(out) as data:
                results.append({k: data[k] for k in data.files})
        return results
