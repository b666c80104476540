"""Diffusion baselines over MPI: DEKF against the centralized Kalman filter, DSGD consensus."""

import numpy as np
import pytest
from helpers import irregular_topology
from mpi4py import MPI

from mcdpf.config import load_config
from mcdpf.driver import train
from mcdpf.kalman import kalman_filter
from mcdpf.sources import linear_gaussian_stream, node_stream

pytestmark = pytest.mark.mpi

STEPS = 100
Q, R, PRIOR_STD = 0.0004, 0.01, 1.0


def linear_config(comm, directory, topology_text, *extra):
    topology = directory / "topology.toml"
    config_path = directory / "c.toml"
    if comm.rank == 0:
        topology.write_text(topology_text)
        config_path.write_text(f'[topology]\nfile = "{topology}"\n')
    comm.Barrier()
    return load_config(config_path, [
        f"run.steps={STEPS}", "run.record_estimates=true", "run.progress_seconds=0",
        "data.source=linear-gaussian", "data.input_dim=2", "data.seed=2",
        "model.kind=linear", f"model.init_std={PRIOR_STD}", f"filter.state_noise={Q}",
        f"filter.obs_noise={R}", *extra])


def kalman_distance(comm, config, estimates, nodes=None):
    """Mean Mahalanobis distance (steps >= 10) of estimates to the Kalman filter of `nodes`."""
    streams = [node_stream(config.data, STEPS, comm.size, k) for k in range(comm.size)]
    chosen = streams if nodes is None else [streams[k] for k in nodes]
    means, covariances = kalman_filter(chosen, Q, R, PRIOR_STD ** 2)
    gap = (estimates - means)[10:]
    precision = np.linalg.inv(covariances[10:])
    return float(np.sqrt(np.einsum("ti,tij,tj->t", gap, precision, gap)).mean())


def test_dekf_on_a_complete_graph_is_the_centralized_kalman_filter(mpi_tmp_path):
    """Every node's incremental update sees every measurement: exact, to rounding."""
    comm = MPI.COMM_WORLD
    from mcdpf.topology import named_topology

    text = named_topology("complete", comm.size).to_toml()
    config = linear_config(comm, mpi_tmp_path, text, "run.algorithm=dekf")
    estimates = train(comm, config, mpi_tmp_path / "dekf")["datasets"]["theta_estimates"]
    streams = [node_stream(config.data, STEPS, comm.size, k) for k in range(comm.size)]
    means, _ = kalman_filter(streams, Q, R, PRIOR_STD ** 2)
    np.testing.assert_allclose(estimates, means, rtol=1e-8, atol=1e-10)


def test_dekf_on_an_irregular_graph_approaches_the_centralized_kalman_filter(mpi_tmp_path):
    """Tolerance: DEKF's distance to the centralized posterior must be under half that of
    the node's own exact local posterior (what EKF without communication computes);
    measured ~0.35 against ~1.3 at K = 3 and 4."""
    comm = MPI.COMM_WORLD
    if comm.size < 3:
        pytest.skip("an irregular connected graph needs at least 3 nodes")
    config = linear_config(comm, mpi_tmp_path, irregular_topology(comm.size).to_toml(),
                           "run.algorithm=dekf")
    estimates = train(comm, config, mpi_tmp_path / "dekf")["datasets"]["theta_estimates"]
    ekf = train(comm, config.replace("run", algorithm="ekf"),
                mpi_tmp_path / "ekf")["datasets"]["theta_estimates"]
    dekf_distance = np.mean(comm.allgather(kalman_distance(comm, config, estimates)))
    ekf_distance = np.mean(comm.allgather(kalman_distance(comm, config, ekf)))
    local = np.mean(comm.allgather(kalman_distance(comm, config, ekf, nodes=[comm.rank])))
    assert local < 1e-8  # ekf is exactly the local Kalman filter
    assert dekf_distance < 0.5 * ekf_distance, (dekf_distance, ekf_distance)


def test_dsgd_on_a_noiseless_linear_problem_reaches_the_true_weights_everywhere(mpi_tmp_path):
    comm = MPI.COMM_WORLD
    from mcdpf.topology import named_topology

    steps = 400
    config = linear_config(comm, mpi_tmp_path, named_topology("ring", comm.size).to_toml(),
                           "run.algorithm=dsgd", "data.noise_std=0.0", "data.drift_std=0.0",
                           "sgd.learning_rate=0.5", f"run.steps={steps}")
    estimate = train(comm, config, mpi_tmp_path / "dsgd")["datasets"]["theta_mean"]
    _, theta = linear_gaussian_stream(config.data, steps, comm.size)
    np.testing.assert_allclose(estimate, theta[0], atol=1e-6)
    assert np.ptp(np.array(comm.allgather(estimate)), axis=0).max() < 1e-6
