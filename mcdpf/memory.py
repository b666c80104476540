"""Memory budget of one rank: refuse at set-up a run whose arrays cannot fit.

:func:`check_memory` estimates what one rank's run holds at its peak — the particle
population and its working copies, covariances (Gaussian particles, the EKF) and the
per-step records — and refuses a run above ``run.max_memory_gb`` (default: this
machine's physical memory divided by the MPI ranks the launcher placed on it) with one
line, before anything is allocated. The estimate is deliberately coarse (an upper bound
of the steady state, not a measurement): it is there to stop a run that would exhaust
the machine, e.g. ``filter.particles = 1000000000``.
"""

from __future__ import annotations

import os

import numpy as np

from .algorithms import central_particles, ekf_covariance, walk_held_bound
from .baselines import BYTES_PER_GB
from .covariance import build_covariance
from .errors import InputError
from .rundir import RECORDS

# Copies of the particle population a step holds at its peak: the population, its
# proposal / resampled copy, and the packed walk records sent and received.
POPULATION_COPIES = 4
PARTICLE_ALGORITHMS = ("pf", "dpf", "rpf")
COVARIANCE_ALGORITHMS = ("ekf", "dekf")
# Environment variables of the launchers that say how many ranks share this machine.
LOCAL_RANK_COUNTS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "PMIX_LOCAL_SIZE")


def local_ranks() -> int:
    """MPI ranks on this machine, as the launcher announced it (1 when it did not)."""
    for variable in LOCAL_RANK_COUNTS:
        value = os.environ.get(variable, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def default_limit_gb() -> float:
    """This machine's physical memory, in GB, divided by the ranks on it."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return total / BYTES_PER_GB / local_ranks()


def particles_of(config, nodes: int) -> int:
    """Particles one rank holds (0 for an algorithm without particles)."""
    if config.run.algorithm in PARTICLE_ALGORITHMS:
        return config.filter.particles
    if config.run.algorithm == "cpf":
        return central_particles(config.filter, nodes)
    return 0


def gaussian_held(config, topology) -> int:
    """Gaussian particles (with their covariances) one rank can hold at once.

    dpf's walk brings them in from its ``s``-hop ball (:func:`~mcdpf.algorithms.
    walk_held_bound`, the bound its covariance check uses); other algorithms hold their own.
    """
    if config.run.algorithm == "dpf":
        return walk_held_bound(config.filter, topology)
    return particles_of(config, topology.nodes)


def needed_bytes(config, model, steps: int, nodes: int,
                 held: int | None = None) -> dict[str, int]:
    """Estimated peak bytes of one rank, by part: ``particles``, ``covariances``, ``records``.

    ``held``: the Gaussian particles whose covariances the rank holds at once (default: its
    own particles).
    """
    algorithm = config.run.algorithm
    particles = particles_of(config, nodes)
    itemsize = np.dtype(model.dtype).itemsize
    n_params = model.n_params
    row = (n_params + model.n_carry) * itemsize + 2 * 8  # theta, carry, log-weight, id
    covariances = 0
    if particles and config.filter.kernel == "gaussian":
        covariances = 2 * build_covariance(config.filter.covariance, model, config.filter.rank,
                                           section="filter").nbytes(
            particles if held is None else held)
    elif algorithm in COVARIANCE_ALGORITHMS:
        covariances = 2 * ekf_covariance(config, model).nbytes()
    per_step = sum(np.dtype(field.dtype).itemsize for field in RECORDS.values())
    if config.run.record_estimates:
        per_step += n_params * 8
    # A checkpoint is built in memory before it is written (one more copy of the state
    # and the records), and the writer thread of run.checkpoint_async holds another.
    saved = int(config.run.checkpoint_every > 0) * (1 + int(config.run.checkpoint_async))
    return {"particles": (POPULATION_COPIES + saved) * particles * row,
            "covariances": covariances, "records": (1 + saved) * steps * per_step}


def check_memory(config, model, steps: int, topology) -> None:
    """Refuse (``InputError``, one line) a run above ``run.max_memory_gb`` on one rank."""
    limit = config.run.max_memory_gb
    limit = default_limit_gb() if limit is None else limit
    nodes = topology.nodes
    held = gaussian_held(config, topology) if config.filter.kernel == "gaussian" else None
    parts = needed_bytes(config, model, steps, nodes, held)
    total = sum(parts.values()) / BYTES_PER_GB
    if total <= limit:
        return
    largest = max(parts, key=parts.get)
    estimates = ", run.record_estimates" if config.run.record_estimates else ""
    what = {"particles": f"particles ({particles_of(config, nodes)} held)",
            "covariances": "covariances",
            "records": f"records ({steps} steps{estimates})"}
    source = ("run.max_memory_gb" if config.run.max_memory_gb is not None else
              f"this machine's memory / {local_ranks()} ranks on it; set run.max_memory_gb")
    raise InputError(f"run.max_memory_gb: one rank needs about {total:.1f} GB, mostly for "
                     f"its {what[largest]}, more than {limit:.1f} GB ({source}); use fewer "
                     "particles, steps or a smaller model, or raise the limit")
