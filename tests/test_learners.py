"""One behaviour suite that every learner passes (river's check_estimator pattern).

Run in one process on a one-node network (``COMM_SELF``): seeding is idempotent,
prediction precedes learning, outputs carry the contract's fields, and a learner
actually learns on an easy stream.
"""

import numpy as np
import pytest
from mpi4py import MPI

from mcdpf.config import load_config
from mcdpf.driver import train
from mcdpf.io import write_stream_file
from mcdpf.registry import ALGORITHMS
from mcdpf.streams import Stream

LEARNERS = sorted(ALGORITHMS)
CONTRACT_DATASETS = {"target", "prediction", "squared_error", "ess", "particles_held",
                     "bytes_sent", "step_seconds", "theta_mean"}
CONTRACT_ATTRIBUTES = {"node", "n_nodes", "algorithm", "steps", "config", "loop_seconds",
                       "startup_seconds", "theta_layout"}


def config_for(tmp_path, algorithm, *extra, source="synthetic-lstm", steps=40):
    path = tmp_path / "c.toml"
    path.write_text('[topology]\nname = "ring"\n')
    overrides = [f"run.algorithm={algorithm}", f"run.steps={steps}", f"data.source={source}",
                 "filter.particles=64", "run.progress_seconds=0", "model.n=2", *extra]
    return load_config(path, overrides)


def run_once(tmp_path, name, config):
    return train(MPI.COMM_SELF, config, tmp_path / name)


@pytest.mark.parametrize("algorithm", LEARNERS)
def test_seeding_is_idempotent(tmp_path, algorithm):
    config = config_for(tmp_path, algorithm, "run.seed=5")
    first = run_once(tmp_path, "a", config)["datasets"]
    second = run_once(tmp_path, "b", config)["datasets"]
    for key in ("prediction", "squared_error", "theta_mean"):
        np.testing.assert_array_equal(first[key], second[key])
    other = run_once(tmp_path, "c", config.replace("run", seed=6))["datasets"]
    assert not np.array_equal(first["prediction"], other["prediction"])


@pytest.mark.parametrize("algorithm", LEARNERS)
def test_prediction_precedes_learning(tmp_path, algorithm):
    """Changing the label of step t changes nothing predicted up to and including t."""
    rng = np.random.default_rng(0)
    steps, changed = 30, 17
    lengths = rng.integers(1, 5, size=steps)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    columns = rng.standard_normal((offsets[-1], 2))
    targets = rng.standard_normal(steps)
    altered = targets.copy()
    altered[changed] += 10.0
    results = []
    for name, labels in (("orig", targets), ("alt", altered)):
        path = tmp_path / f"{name}.h5"
        write_stream_file(path, [Stream(columns, offsets, labels)])
        config = config_for(tmp_path, algorithm, "data.source=file", f"data.path={path}",
                            source="file", steps=steps)
        results.append(run_once(tmp_path, name, config)["datasets"]["prediction"])
    np.testing.assert_array_equal(results[0][:changed + 1], results[1][:changed + 1])
    assert not np.array_equal(results[0][changed + 1:], results[1][changed + 1:])


@pytest.mark.parametrize("algorithm", LEARNERS)
def test_outputs_have_contract_fields(tmp_path, algorithm):
    result = run_once(tmp_path, "run", config_for(tmp_path, algorithm))
    assert CONTRACT_DATASETS <= set(result["datasets"])
    assert CONTRACT_ATTRIBUTES <= set(result["attributes"])
    assert (tmp_path / "run" / "node-0000.h5").is_file()
    datasets = result["datasets"]
    assert datasets["prediction"].shape == (40,)
    np.testing.assert_allclose(datasets["squared_error"],
                               (datasets["target"] - datasets["prediction"]) ** 2)
    assert np.all(np.isfinite(datasets["prediction"]))
    assert datasets["theta_mean"].shape == (result["attributes"]["n_params"],)


@pytest.mark.parametrize("algorithm", LEARNERS)
def test_learns_an_easy_linear_problem(tmp_path, algorithm):
    """On linear-Gaussian data the late MSE falls well below the label variance."""
    config = config_for(tmp_path, algorithm, "model.kind=linear", "data.noise_std=0.05",
                        "data.drift_std=0.0", "filter.state_noise=1e-5",
                        "filter.obs_noise=0.0025", "model.init_std=1.0",
                        source="linear-gaussian", steps=150)
    datasets = run_once(tmp_path, "run", config)["datasets"]
    late = datasets["squared_error"][-50:].mean()
    assert late < 0.2 * datasets["target"].var()


def test_dpf_on_a_single_node_reduces_to_pf(tmp_path):
    """K = 1: every walk step stays home with exponent 1/s, so s visits give p(d|a)^1.

    The walk draws come from their own random stream, so both filters see the same
    propagation and resampling draws; predictions agree to rounding (the likelihood is
    summed in s pieces).
    """
    pf = run_once(tmp_path, "pf", config_for(tmp_path, "pf"))["datasets"]
    dpf = run_once(tmp_path, "dpf", config_for(tmp_path, "dpf", "filter.walk_steps=3"))
    np.testing.assert_allclose(dpf["datasets"]["prediction"], pf["prediction"], rtol=1e-9)
    assert dpf["datasets"]["bytes_sent"].sum() == 0


def test_cpf_on_a_single_node_equals_pf(tmp_path):
    pf = run_once(tmp_path, "pf", config_for(tmp_path, "pf", "run.seed=4"))["datasets"]
    cpf = run_once(tmp_path, "cpf", config_for(tmp_path, "cpf", "run.seed=4"))["datasets"]
    for key in ("prediction", "theta_mean", "ess"):
        np.testing.assert_array_equal(cpf[key], pf[key])


def test_ekf_on_the_linear_model_is_the_kalman_filter(tmp_path):
    from mcdpf.kalman import kalman_filter
    from mcdpf.sources import node_stream

    config = config_for(tmp_path, "ekf", "model.kind=linear", "model.init_std=0.8",
                        "filter.state_noise=0.001", "filter.obs_noise=0.02",
                        "run.record_estimates=true",
                        source="linear-gaussian", steps=120)
    estimates = run_once(tmp_path, "ekf", config)["datasets"]["theta_estimates"]
    stream = node_stream(config.data, 120, 1, 0)
    means, _ = kalman_filter([stream], 0.001, 0.02, 0.8 ** 2)
    np.testing.assert_allclose(estimates, means, rtol=1e-9, atol=1e-12)


def test_sgd_step_is_the_exact_gradient_step(tmp_path):
    """One SGD step on an LSTM moves theta by mu (d - d_hat) grad d_hat, with the gradient
    checked against finite differences of the model's own prediction."""
    from mcdpf.baselines import OnlineSGD
    from mcdpf.models import build_model

    config = config_for(tmp_path, "sgd")
    model = build_model(config.model, 2)
    learner = OnlineSGD(model, seed=0, node=0, learning_rate=0.05)
    columns = np.random.default_rng(1).standard_normal((4, 2))
    state = learner.initial_state()
    before = state.estimate.copy()
    prediction, pending = learner.predict(state, 0, columns)
    state, _ = learner.learn(state, pending, 0.7)
    step = 1e-6
    numeric = np.array([(model.prediction_gradient(before + step * e, np.zeros(4), columns)[0]
                         - model.prediction_gradient(before - step * e, np.zeros(4), columns)[0])
                        / (2 * step) for e in np.eye(before.size)])
    np.testing.assert_allclose(state.estimate - before, 0.05 * (0.7 - prediction) * numeric,
                               rtol=1e-5, atol=1e-9)


def test_adam_steps_are_kingma_and_ba_on_the_sgd_gradient(tmp_path):
    """Three Adam steps of the learner equal the numpy reference fed sgd's loss gradient
    ``(d_hat - d) grad d_hat`` (the gradient checked against finite differences above); a
    step without a label moves nothing and does not count."""
    import naive

    from mcdpf.baselines import OnlineAdam
    from mcdpf.models import build_model

    config = config_for(tmp_path, "adam", "adam.learning_rate=0.03", "adam.beta1=0.8")
    model = build_model(config.model, 2)
    learner = OnlineAdam(model, seed=0, node=0, settings=config.adam)
    rng = np.random.default_rng(2)
    state = learner.initial_state()
    want = (state.estimate.copy(), np.zeros(model.n_params), np.zeros(model.n_params))
    for t, target in enumerate([0.7, None, -0.2, 0.4]):
        columns = rng.standard_normal((3, 2))
        prediction, pending = learner.predict(state, t, columns)
        state, _ = learner.learn(state, pending, target)
        if target is None:
            np.testing.assert_array_equal(state.estimate, want[0])
            continue
        gradient = model.prediction_gradient(want[0], pending.carry, columns)[1]
        want = naive.adam_update(*want, (prediction - target) * gradient, 0.03, 0.8, 0.999,
                                 1e-8, state.updates)
        np.testing.assert_allclose(state.estimate, want[0], rtol=1e-12)
    assert state.updates == 3
    np.testing.assert_allclose(state.second_moment, want[2], rtol=1e-12)
    restored = learner.restore(learner.state_arrays(state))
    for key, value in learner.state_arrays(state).items():
        np.testing.assert_array_equal(learner.state_arrays(restored)[key], value)


def test_dadam_on_a_single_node_is_adam(tmp_path):
    """K = 1: the Metropolis combination is the identity and nothing is sent."""
    adam = run_once(tmp_path, "adam", config_for(tmp_path, "adam"))["datasets"]
    dadam = run_once(tmp_path, "dadam", config_for(tmp_path, "dadam"))["datasets"]
    for key in ("prediction", "theta_mean"):
        np.testing.assert_array_equal(dadam[key], adam[key])
    assert dadam["bytes_sent"].sum() == 0


def test_ekf_refuses_a_covariance_beyond_the_memory_limit(tmp_path):
    from mcdpf.errors import InputError

    config = config_for(tmp_path, "ekf", "model.n=64", "ekf.max_memory_gb=0.1")
    with pytest.raises(InputError, match="covariance needs .* GB"):
        run_once(tmp_path, "big", config)
