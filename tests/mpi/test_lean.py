"""The v2 particle options against the exact centralized Kalman filter (linear-Gaussian).

Every lean or improved dpf option (float32 wire, visit centering, the linearized
proposal, adaptive resampling) still approaches the exact posterior as the walk
lengthens; Gaussian particles (a Gaussian-sum filter) in rpf are exact on this model up to
their prior mixture, and in pf they stay at the node's local posterior.
Distances are in posterior standard deviations (Mahalanobis, steps 20..100, mean over
nodes), seeded, so they cannot flake; tolerances are stated where asserted.
"""

import numpy as np
import pytest
from helpers import irregular_topology, kalman_distance
from mpi4py import MPI

from mcdpf.config import load_config
from mcdpf.driver import train

pytestmark = pytest.mark.mpi

BURN_IN, STEPS = 20, 100
Q, R, PRIOR_STD = 0.0004, 0.01, 1.0


def distance(comm, directory, *extra, nodes=None, seeds=(21,)):
    """Mean distance over ``seeds`` (run.seed) to the Kalman filter of ``nodes`` (all)."""
    return float(np.mean([one_distance(comm, directory, *extra, f"run.seed={seed}",
                                       nodes=nodes) for seed in seeds]))


def one_distance(comm, directory, *extra, nodes=None):
    path = directory / "c.toml"
    if comm.rank == 0:
        (directory / "t.toml").write_text(irregular_topology(comm.size).to_toml())
        path.write_text(f'[topology]\nfile = "{directory / "t.toml"}"\n')
    comm.Barrier()
    config = load_config(path, [
        f"run.steps={STEPS}", "run.record_estimates=true", "run.progress_seconds=0",
        "data.source=linear-gaussian", "data.input_dim=2", "data.seed=8",
        "data.drift_std=0.02", "data.noise_std=0.1", "model.kind=linear",
        f"model.init_std={PRIOR_STD}", f"filter.state_noise={Q}", f"filter.obs_noise={R}",
        *extra])
    estimates = train(comm, config, None, write=False)["datasets"]["theta_estimates"]
    return kalman_distance(comm, config, estimates, STEPS, BURN_IN, nodes)


OPTIONS = {
    "float32 wire": ["filter.wire_dtype=float32"],
    "visit centering": ["filter.visit_centering=true"],
    "linearized proposal": ["filter.proposal=linearized"],
    "adaptive resampling": ["filter.ess_threshold=0.5"],
}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_every_dpf_option_approaches_the_kalman_filter(mpi_tmp_path, option):
    """s = 2 -> s = 16 at N = 600 (measured at K = 3, 4: 0.67-0.90 -> 0.15-0.38): the
    distance falls by at least 1.5x and ends below 0.5 (room for the Monte Carlo spread of
    600 particles and one seed)."""
    comm = MPI.COMM_WORLD
    if comm.size < 3:
        pytest.skip("an irregular connected graph needs at least 3 nodes")
    extra = ["run.algorithm=dpf", "filter.particles=600", *OPTIONS[option]]
    short = distance(comm, mpi_tmp_path, *extra, "filter.walk_steps=2")
    long = distance(comm, mpi_tmp_path, *extra, "filter.walk_steps=16")
    assert long < short / 1.5 and long < 0.5, (option, short, long)


def test_visit_centering_brings_dpf_within_0_2_at_n_1000_s_20(mpi_tmp_path):
    """The issue's target on an irregular graph, mean of three seeds: Algorithm-1 dpf
    (measured 0.30 at K = 3, 0.22 at K = 4, N = 1000, s = 20) against centred visits with
    the linearized proposal (measured 0.15, 0.17): below 0.2, and below Algorithm 1's."""
    comm = MPI.COMM_WORLD
    if comm.size < 3:
        pytest.skip("an irregular connected graph needs at least 3 nodes")
    common = ["run.algorithm=dpf", "filter.particles=1000", "filter.walk_steps=20"]
    seeds = (21, 22, 23)
    paper = distance(comm, mpi_tmp_path, *common, seeds=seeds)
    centred = distance(comm, mpi_tmp_path, *common, "filter.visit_centering=true",
                       "filter.proposal=linearized", seeds=seeds)
    assert centred < 0.2 and centred < paper, (paper, centred)


def test_gaussian_particles_are_the_kalman_filter_in_rpf_and_local_in_pf(mpi_tmp_path):
    """A Gaussian-sum filter on a linear-Gaussian model: every component is an exact
    Kalman filter (from its own prior draw), so rpf with hops >= diameter is within 0.01
    of the centralized posterior after the burn-in (measured < 0.001), and pf with
    Gaussian particles within 0.01 of the node's own local posterior while about one
    centralized standard deviation from the centralized one (at least 0.5)."""
    comm = MPI.COMM_WORLD
    if comm.size < 3:
        pytest.skip("an irregular connected graph needs at least 3 nodes")
    gaussian = ["filter.kernel=gaussian", "filter.particles=10", "filter.ess_threshold=0.5"]
    relayed = distance(comm, mpi_tmp_path, "run.algorithm=rpf", *gaussian)
    local = distance(comm, mpi_tmp_path, "run.algorithm=pf", *gaussian, nodes=[comm.rank])
    central = distance(comm, mpi_tmp_path, "run.algorithm=pf", *gaussian)
    assert relayed < 0.01, relayed
    assert local < 0.01, local
    assert central > 0.5, central
