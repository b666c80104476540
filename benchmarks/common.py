"""Shared helpers for the benchmarks: single-thread set-up, learners, timing, machine info.

Import this module first: it pins BLAS and numba to one thread before numpy loads, so
that every rate is a per-core rate.
"""

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                  "NUMBA_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def best_time(function, repeats: int = 7, inner: int | None = None,
              target_seconds: float = 0.05, clock=time.perf_counter) -> float:
    """Minimum over ``repeats`` of the mean time of ``inner`` calls (seconds per call).

    The minimum is the least disturbed measurement on a shared machine; ``inner`` is
    chosen so that one repeat lasts about ``target_seconds``. ``clock`` is wall time by
    default; ``time.thread_time`` (this thread's CPU time) leaves out the time other
    processes take the core, for single-threaded per-core rates on a loaded machine.
    """
    function()
    if inner is None:
        started = clock()
        function()
        once = max(clock() - started, 1e-7)
        inner = max(1, int(target_seconds / once))
    times = []
    for _ in range(repeats):
        started = clock()
        for _ in range(inner):
            function()
        times.append((clock() - started) / inner)
    return min(times)


def matmul_rate(dtype=np.float32, size: int = 1024, clock=time.perf_counter) -> float:
    """This machine's single-thread matrix-multiply rate, FLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    seconds = best_time(lambda: a @ b, repeats=5, inner=3, clock=clock)
    return 2.0 * size ** 3 / seconds


def machine_info() -> dict:
    """CPU, core count and library versions, for every JSON file."""
    import numba

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import mpi4py
        from mpi4py import MPI

        mpi = MPI.Get_library_version().splitlines()[0].strip()
        mpi4py_version = mpi4py.__version__
    except Exception:  # noqa: BLE001 - info only
        mpi, mpi4py_version = "unavailable", "unavailable"
    import mcdpf

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "numba_cpu": numba.config.CPU_NAME or __import__("llvmlite.binding").binding
        .get_host_cpu_name(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "mpi": mpi,
        "mpi4py": mpi4py_version,
        "mcdpf": mcdpf.__version__,
        "git": _git_revision(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_json(path, payload: dict) -> None:
    """Write ``payload`` (with machine info) as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine_info(), **payload}
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"\nwritten: {path}")


def spread(values) -> dict:
    """Mean and sample standard deviation (0 for one value) of ``values``."""
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if values.size > 1 else 0.0}


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Plain-text table; ``columns`` are (key, header, format)."""
    headers = [header for _, header, _ in columns]
    cells = [[format(row[key], fmt) if isinstance(row[key], int | float) else str(row[key])
              for key, _, fmt in columns] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def to_toml(document: dict) -> str:
    """A configuration file's text from ``{section: {key: value}}`` or ``{"section.key": value}``
    (JSON's strings, numbers and booleans are TOML's)."""
    sections: dict = {}
    for name, value in document.items():
        if isinstance(value, dict):
            sections.setdefault(name, {}).update(value)
        else:
            section, key = name.split(".")
            sections.setdefault(section, {})[key] = value
    return "".join(f"[{section}]\n" + "".join(f"{key} = {json.dumps(value)}\n"
                                              for key, value in keys.items())
                   for section, keys in sections.items())


def mpiexec() -> str:
    """The mpiexec beside this Python (the mpich wheel's), else the one on PATH."""
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else "mpiexec"


def config_for(algorithm, n, particles, dtype="float64", nodes=1, walk="lazy", walk_steps=3,
               threads=1, **extra):
    """The benchmarks' configuration: a ring of ``nodes``, model n, ``extra`` in [filter]."""
    from mcdpf.config import load_config

    return load_config({
        "topology": {"name": "ring", "nodes": nodes, "walk": walk},
        "model": {"n": n, "dtype": dtype, "init_std": 0.3},
        "filter": {"particles": particles, "central_particles": particles,
                   "walk_steps": walk_steps, **extra},
        "run": {"algorithm": algorithm, "threads": threads}})


def learner_for(algorithm, n, p, particles, dtype, comm=None, threads=1, nodes=1, walk="lazy",
                walk_steps=3, neighbourhood=None, **extra):
    """A learner at node 0 (or ``comm.rank``) of a ring of ``nodes``, and its model.

    Its neighbourhood (built on ``comm``, or ``neighbourhood`` itself: a stand-in for
    local measurements) is ``learner.benchmark_neighbourhood``, for the caller to free.
    Freed memory is kept for reuse as a :class:`mcdpf.Node` keeps it (the algorithm's
    ``steady_arrays`` trait).
    """
    from mcdpf.algorithms import LearnerContext, build_learner, traits
    from mcdpf.allocator import keep_freed_memory
    from mcdpf.models import build_model
    from mcdpf.topology import named_topology

    config = config_for(algorithm, n, particles, dtype, nodes, walk, walk_steps, threads,
                        **extra)
    keep_freed_memory(traits(algorithm).steady_arrays)
    model = build_model(config.model, p)
    topology = named_topology("ring", nodes, walk=walk)
    rank = 0 if comm is None else comm.rank
    if neighbourhood is None and comm is not None:
        from mcdpf.comm import Neighbourhood

        neighbourhood = Neighbourhood(comm, topology.neighbours(rank))
    measurements = None
    if traits(algorithm).needs_all_streams:
        from mcdpf.preparation import StreamTable

        measurements = StreamTable([], [])
    learner = build_learner(algorithm, LearnerContext(config, model, topology, rank,
                                                      neighbourhood, measurements))
    learner.benchmark_neighbourhood = neighbourhood
    return learner, model
