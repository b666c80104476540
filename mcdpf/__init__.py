"""mcdpf: decentralized online training of LSTM regressors over MPI.

Learning is the Markov Chain Distributed Particle Filter: one MPI rank per network node,
particles over the LSTM weights, random walks over the graph, neighbour-only messages.

The public API (DESIGN §7)::

    import mcdpf
    config = mcdpf.load_config("my.toml", overrides={"filter.particles": 200})
    result = mcdpf.train(config, comm, stream=mcdpf.Stream.from_sequences(X, d))
    node = mcdpf.Node(config, comm, input_dim=2)      # live: node.predict(X); node.learn(d)
    run = mcdpf.read_run("runs/my")                   # results, in the data's units too

Names are loaded on first use, so ``import mcdpf`` stays cheap and starts no MPI.
Imported in a process that an MPI launcher started among several (``mpiexec -n K python
script.py``, K > 1), it installs an abort-on-uncaught-exception hook, as ``python -m
mpi4py`` does: an exception that nothing catches prints its traceback once and, if MPI
is in use, aborts the whole job, so that no other rank waits for ever.
"""

import os
import sys

__version__ = "0.2.0"

# Launcher variables that give the number of processes (MPICH/Hydra, Open MPI, Slurm).
_WORLD_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "SLURM_NTASKS")


def _launched_among_several() -> bool:
    for variable in _WORLD_SIZE_VARIABLES:
        value = os.environ.get(variable, "")
        if value.isdigit():
            return int(value) > 1
    return False


def _abort_on_uncaught_exception(previous):
    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        if "mpi4py.MPI" in sys.modules:
            from .comm import abort_world

            abort_world(1)

    return hook


if _launched_among_several() and sys.excepthook is sys.__excepthook__:
    sys.excepthook = _abort_on_uncaught_exception(sys.excepthook)

_EXPORTS = {
    "load_config": ("config", "load_config"),
    "Config": ("config", "Config"),
    "InputError": ("errors", "InputError"),
    "Stream": ("streams", "Stream"),
    "train": ("api", "train"),
    "RunResult": ("api", "RunResult"),
    "read_run": ("results", "read_run"),
    "Run": ("results", "Run"),
    "NodeRun": ("results", "NodeRun"),
    "Scaling": ("streams", "Scaling"),
    "Node": ("node", "Node"),
    "StepInfo": ("learner", "StepInfo"),
    "Topology": ("topology", "Topology"),
    "topology_from_edges": ("topology", "from_edges"),
    "topology_from_name": ("topology", "named_topology"),
    "topology_from_networkx": ("topology", "from_networkx"),
    "read_topology": ("topology", "read_topology_file"),
    "LockstepError": ("errors", "LockstepError"),
    "ALGORITHMS": ("registry", "ALGORITHMS"),
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mcdpf' has no attribute {name!r}")
    import importlib

    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    globals()[name] = value
    return value


def __dir__():
    return __all__
