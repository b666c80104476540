"""Gaussian particles in every covariance form (``filter.covariance``, ``filter.rank``).

One Gaussian particle on the linear-Gaussian model against the exact Kalman filter (the
setting and the bounds of tests/test_covariance.py), also walking in dpf, every form
through pf, rpf and dpf deterministic and resuming bit-exactly, the bytes of migrating
Gaussian particles, and the refusals of bad inputs.
"""

from dataclasses import replace
from functools import partial

import numpy as np
import pytest
from support import run_mpi
from test_covariance import (
    BURN_IN,
    P_LINEAR,
    PRIOR,
    STEPS,
    Q,
    R,
    correlated_linear_stream,
    kalman_distance,
)
from test_particle_options import assert_resumes_bit_exactly, assert_same, write_config

from mcdpf.config import load_config
from mcdpf.errors import InputError
from mcdpf.registry import COVARIANCES

FORMS = tuple(COVARIANCES)
MINIMAL = {"topology": {"name": "ring"}}


def linear_particle_filter(overrides, count):
    """pf with ``count`` particles and the filter ``overrides`` on the linear model (p =
    P_LINEAR, ``P0 = PRIOR I``), seed 3."""
    from mcdpf.filters import ParticleFilter, StreamPlan
    from mcdpf.models import LinearModel

    settings = load_config(MINIMAL, overrides).filter
    model = LinearModel(inputs=P_LINEAR, init_std=1.0, dtype=np.dtype("float64"))
    return ParticleFilter(model=model, settings=settings, seed=3, key=0, count=count,
                          plan=StreamPlan(nodes=(0,)), initial_variance=PRIOR)


def particle_means(name, stream, rank=None, walk_steps=None):
    """One Gaussian particle of pf (prior mean 0, ``P0 = PRIOR I``) on the linear model;
    with ``walk_steps``, of dpf on a single node walking that many steps."""
    overrides = {"filter.kernel": "gaussian", "filter.covariance": name,
                 "filter.state_noise": Q, "filter.obs_noise": R}
    if rank is not None:
        overrides["filter.rank"] = rank
    if walk_steps is not None:
        overrides.update({"filter.walk_steps": walk_steps, "filter.particles": 1})
    if walk_steps is None:
        pf = linear_particle_filter(overrides, count=1)
    else:
        from mpi4py import MPI

        from mcdpf.comm import Neighbourhood
        from mcdpf.dpf import DistributedParticleFilter
        from mcdpf.models import LinearModel
        from mcdpf.topology import named_topology

        settings = load_config(MINIMAL, overrides).filter
        model = LinearModel(inputs=P_LINEAR, init_std=1.0, dtype=np.dtype("float64"))
        assert PRIOR == model.init_std ** 2  # dpf's P0
        pf = DistributedParticleFilter(model=model, settings=settings, seed=3, node=0,
                                       topology=named_topology("ring", 1),
                                       neighbourhood=Neighbourhood(MPI.COMM_SELF, []))
    state = pf.initial_state()
    state = replace(state, particles=replace(state.particles,
                                             theta=np.zeros((1, P_LINEAR))))
    means = np.empty((STEPS, P_LINEAR))
    for t in range(STEPS):
        columns = stream.columns[stream.offsets[t]:stream.offsets[t + 1]]
        _, pending = pf.predict(state, t, columns)
        state, _ = pf.learn(state, pending, float(stream.targets[t]))
        means[t] = state.estimate
    return means


def test_one_full_gaussian_particle_is_the_exact_kalman_filter():
    from mcdpf.kalman import kalman_filter

    stream = correlated_linear_stream()
    exact, _ = kalman_filter([stream], Q, R, PRIOR)
    for name in ("full", "decoupled"):  # the linear model is one unit: one block
        np.testing.assert_allclose(particle_means(name, stream), exact, rtol=1e-9,
                                   atol=1e-11, err_msg=name)


def test_one_gaussian_particle_walking_on_one_node_is_the_exact_kalman_filter():
    """dpf on one node: each of the s walk steps visits the node with exponent 1/s, an
    EKF update with noise s r; on the linear model s such updates with one measurement
    are exactly one update with noise r. So the walking particle is the Kalman filter
    (rtol 1e-9: rounding of s sequential updates)."""
    from mcdpf.kalman import kalman_filter

    stream = correlated_linear_stream()
    exact, _ = kalman_filter([stream], Q, R, PRIOR)
    for name in ("full", "decoupled"):
        for walk_steps in (1, 3):
            np.testing.assert_allclose(particle_means(name, stream, walk_steps=walk_steps),
                                       exact, rtol=1e-9, atol=1e-11,
                                       err_msg=f"{name} s={walk_steps}")


def test_structured_gaussian_particles_stay_near_the_exact_posterior():
    """Mean Mahalanobis distance (steps 30..299, exact-posterior sd units; seeded, so
    exact): the bounds of tests/test_covariance.py, which measured diagonal 2.3 and
    lowrank r = 1 / 3 / 5: 5.0 / 2.7 / 0.53 for the same forms outside a particle filter —
    within 8 sd and a tenth of the prior mean's distance; lowrank at r = n_theta - 1
    within 1 sd."""
    assert BURN_IN < STEPS
    stream = correlated_linear_stream()
    prior = kalman_distance(np.zeros((STEPS, P_LINEAR)), stream)
    for name, rank in (("diagonal", None), ("lowrank", 1), ("lowrank", 3)):
        distance = kalman_distance(particle_means(name, stream, rank), stream)
        assert 0 < distance < 8.0 and distance < 0.1 * prior, (name, rank, distance)
    assert kalman_distance(particle_means("lowrank", stream, P_LINEAR - 1), stream) < 1.0


def tempered_run(eta, stream, steps=60):
    """Three Gaussian particles of pf (full form, never resampled) on the linear model with
    ``filter.weight_tempering = eta``: per step the means, log-weights, ESS, prediction and
    the particles' own predictions."""
    pf = linear_particle_filter({
        "filter.kernel": "gaussian", "filter.particles": 3, "filter.ess_threshold": 0.0,
        "filter.state_noise": Q, "filter.obs_noise": R, "filter.weight_tempering": eta}, count=3)
    state, rows = pf.initial_state(), []
    for t in range(steps):
        columns = stream.columns[stream.offsets[t]:stream.offsets[t + 1]]
        prediction, pending = pf.predict(state, t, columns)
        state, info = pf.learn(state, pending, float(stream.targets[t]))
        rows.append((state.particles.theta.copy(), state.particles.log_weights.copy(),
                     info.ess, prediction, np.array(pending.predictions)))
    return rows


def test_weight_tempering_scales_the_weights_and_leaves_the_moves():
    """eta multiplies every log-likelihood increment of the weights and nothing else: the
    means are bit-identical at every eta, the log-weight differences are eta times the
    untempered ones (float64 sums of the same terms, so to 1e-9 relative), and eta = 0
    keeps equal weights, ESS = N, and predicts the plain mean of the particles' own
    predictions (an ensemble)."""
    stream = correlated_linear_stream()
    runs = {eta: tempered_run(eta, stream) for eta in (1.0, 0.5, 0.0)}
    spread = max(np.ptp(row[1]) for row in runs[1.0])
    assert spread > 1.0  # the untempered weights do separate the particles
    for (theta, bayes, *_), (theta_half, half, *_), (theta_zero, zero, ess, prediction,
                                                    own) in zip(*runs.values(), strict=True):
        assert np.array_equal(theta, theta_half) and np.array_equal(theta, theta_zero)
        np.testing.assert_allclose(half - half[0], 0.5 * (bayes - bayes[0]), rtol=1e-9,
                                   atol=1e-9)
        assert np.ptp(zero) == 0.0 and ess == pytest.approx(3.0, rel=1e-12)
        assert prediction == pytest.approx(float(np.mean(own)), rel=1e-12)


def test_weight_tempering_is_refused_where_it_means_nothing():
    with pytest.raises(InputError, match="weight_tempering = -0.5: must be >= 0"):
        load_config(MINIMAL, {"filter.weight_tempering": -0.5})
    with pytest.raises(InputError, match="weight_tempering = 1.5: must be <= 1.0"):
        load_config(MINIMAL, {"filter.weight_tempering": 1.5})
    with pytest.raises(InputError, match="weight_tempering is for pf, rpf and cpf; dpf "
                                         "tempers its visits with visit_tempering"):
        check("dpf", {"filter.weight_tempering": 0.5})
    with pytest.raises(InputError, match="weight_tempering = 0 leaves point particles' "
                                         "weights equal"):
        check("pf", {"filter.weight_tempering": 0.0, "filter.kernel": "point"})
    with pytest.raises(InputError, match="weight_tempering goes with proposal = \"prior\""):
        check("pf", {"filter.weight_tempering": 0.5, "filter.kernel": "point",
                     "filter.proposal": "linearized"})
    check("rpf", {"filter.weight_tempering": 0.0})
    check("pf", {"filter.weight_tempering": 0.5, "filter.kernel": "point"})


@pytest.mark.parametrize("overrides, message", [
    ({"filter.covariance": "banded"}, r"covariance = \"banded\": must be one of full, "
                                      "diagonal, decoupled, lowrank"),
    ({"filter.kernel": "gaussian", "filter.covariance": "diagonal", "filter.rank": 2},
     r"\[filter\] rank goes with covariance = \"lowrank\" only"),
    ({"filter.kernel": "gaussian", "filter.covariance": "lowrank", "filter.rank": 0},
     "rank = 0: must be >= 1"),
    ({"filter.covariance": "diagonal"}, r"\[filter\] covariance = \"diagonal\" is for "
                                        "Gaussian particles"),
])
def test_bad_filter_covariance_keys_are_refused(overrides, message):
    with pytest.raises(InputError, match=message):
        load_config(MINIMAL, overrides)


def run_with(algorithm, ranks, command, config, *args, **kwargs):
    """``mcdpf command config ...`` with ``run.algorithm = algorithm``."""
    return run_mpi(ranks, command, config, *args, "--set", f"run.algorithm={algorithm}",
                   **kwargs)


def check(algorithm, overrides, nodes=2):
    from mcdpf.algorithms import traits
    from mcdpf.models import build_model
    from mcdpf.topology import named_topology

    config = load_config(MINIMAL, {"run.algorithm": algorithm, "filter.kernel": "gaussian",
                                   **overrides})
    traits(algorithm).check(config, build_model(config.model, 2),
                            named_topology("ring", nodes))


def test_rank_at_least_n_theta_and_memory_are_refused_at_set_up():
    """n = 2, p = 2: 42 weights. Memory: 1000 particles' full covariances (2 x 14 MB)
    exceed 1 GB; the diagonal form's (2 x 0.34 MB) fit it."""
    for algorithm in ("pf", "cpf", "rpf"):
        with pytest.raises(InputError, match="filter.rank = 42: lowrank needs 1 <= rank < "
                                             "n_theta = 42"):
            check(algorithm, {"filter.covariance": "lowrank", "filter.rank": 42})
    big = {"filter.particles": 1000, "ekf.max_memory_gb": 0.01}
    with pytest.raises(InputError, match="42 x 42 covariances of 1000 Gaussian particles"):
        check("pf", big)
    with pytest.raises(InputError, match="rank-10 lowrank covariances of 42 weights of 1000"):
        check("rpf", {**big, "filter.covariance": "lowrank", "ekf.max_memory_gb": 0.001})
    check("pf", {**big, "filter.covariance": "diagonal"})
    # dpf counts what a node can hold after a walk: N times its s-hop ball. On the
    # 4-ring a walk of 1 step reaches 3 nodes (750 particles' full covariances, 2 x 10.6
    # MB, fit 0.025 GB), of 2 steps all 4 (1000: 2 x 14 MB do not).
    walking = {"filter.particles": 250, "ekf.max_memory_gb": 0.025}
    check("dpf", {**walking, "filter.walk_steps": 1}, nodes=4)
    with pytest.raises(InputError, match="42 x 42 covariances of 1000 Gaussian particles"):
        check("dpf", {**walking, "filter.walk_steps": 2}, nodes=4)
    check("dpf", {**walking, "filter.walk_steps": 2, "filter.covariance": "diagonal"}, nodes=4)


@pytest.mark.parametrize("algorithm", ["pf", "rpf", "dpf"])
@pytest.mark.parametrize("name", ["diagonal", "decoupled", "lowrank"])
def test_every_form_is_deterministic_and_resumes_bit_exactly(tmp_path, algorithm, name):
    rank = "rank = 3\n" if name == "lowrank" else ""
    config = write_config(tmp_path, f"{algorithm}-{name}",
                          f'kernel = "gaussian"\ncovariance = "{name}"\n{rank}'
                          "ess_threshold = 0.5\n")
    ranks = 3
    run_mpi = partial(run_with, algorithm)
    reference = run_mpi(ranks, "train", config, "--out", tmp_path / "ref", "--quiet")
    assert reference.returncode == 0, reference.stderr
    again = run_mpi(ranks, "train", config, "--out", tmp_path / "again", "--quiet")
    assert again.returncode == 0, again.stderr
    assert_same(tmp_path / "ref", tmp_path / "again", ranks)
    assert_resumes_bit_exactly(tmp_path, config, ranks, run=run_mpi)


@pytest.mark.parametrize("name", FORMS)
def test_migrating_gaussian_particles_send_their_covariance_and_count_it(tmp_path, name):
    """dpf, 2 ranks (one neighbour), 2 walk steps, float32 wire: every move is one record
    of id, log-weight, mean, carried state and the form's arrays, 16 + 4 (n_theta + n_carry)
    bytes plus the form's ``wire_bytes`` (n = 2, p = 2: 42 weights, 4 carried values), and
    ``bytes_sent`` is exactly the moves times the record plus the two stamped counts."""
    import h5py

    from mcdpf.covariance import build_covariance
    from mcdpf.dpf import wire_record_dtype
    from mcdpf.models import build_model

    rank = "rank = 3\n" if name == "lowrank" else ""
    config = write_config(tmp_path, f"dpf-{name}", f'kernel = "gaussian"\ncovariance = '
                          f'"{name}"\n{rank}wire_dtype = "float32"\n')
    loaded = load_config(config)
    model = build_model(loaded.model, 2)
    form = build_covariance(name, model, loaded.filter.rank)
    record = wire_record_dtype(model, "float32", form).itemsize
    assert record == 16 + 4 * (model.n_params + model.n_carry) + form.wire_bytes(1, "float32")
    result = run_with("dpf", 2, "train", config, "--out", tmp_path / "run", "--quiet")
    assert result.returncode == 0, result.stderr
    for node in range(2):
        with h5py.File(tmp_path / "run" / f"node-{node:04d}.h5") as handle:
            sent, moves = handle["bytes_sent"][()], handle["particles_sent"][()]
        assert moves.sum() > 0
        np.testing.assert_array_equal(sent - 2 * 16, moves * record)
