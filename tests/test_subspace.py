"""The subspace construction (:mod:`mcdpf.subspace`) and its refusals."""

import numpy as np
import pytest
from support import run_mpi

from mcdpf.config import load_config
from mcdpf.errors import InputError
from mcdpf.models import build_model
from mcdpf.subspace import SubspaceModel, subspace_basis

MINIMAL = '[topology]\nname = "ring"\n'


def test_the_basis_is_orthonormal_and_a_function_of_the_seed():
    basis, anchor = subspace_basis(3, 50, 8, 0.5)
    np.testing.assert_allclose(basis.T @ basis, np.eye(8), atol=1e-12)
    again, anchor_again = subspace_basis(3, 50, 8, 0.5)
    assert again.tobytes() == basis.tobytes() and anchor_again.tobytes() == anchor.tobytes()
    other, _ = subspace_basis(4, 50, 8, 0.5)
    assert not np.allclose(other, basis)
    full, zero = subspace_basis(3, 6, 6, 0.5)
    np.testing.assert_allclose(full @ full.T, np.eye(6), atol=1e-12)
    assert not zero.any()


def test_the_subspace_model_evaluates_the_wrapped_model_at_anchor_plus_p_z():
    config = load_config({"topology": {"name": "ring"}, "model": {"n": 3}})
    model = build_model(config.model, 2)
    basis, anchor = subspace_basis(0, model.n_params, 5, model.init_std)
    wrapped = SubspaceModel(base=model, basis=basis, anchor=anchor)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 5))
    carry = rng.standard_normal((4, model.n_carry))
    noise = np.zeros_like(carry)
    columns = rng.standard_normal((6, 2))
    theta = anchor + z @ basis.T
    expected = model.evaluate(theta, carry, noise, columns)
    got = wrapped.evaluate(z, carry, noise, columns)
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)
    assert wrapped.n_params == 5 and wrapped.n_carry == model.n_carry


@pytest.mark.parametrize("value, message", [
    ("-1", "subspace = -1: must be >= 0"),
    ("1.5", "subspace"),
    ("\"a\"", "subspace"),
])
def test_bad_subspace_values_are_refused(tmp_path, value, message):
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL + f"[filter]\nsubspace = {value}\n")
    with pytest.raises(InputError, match=f"c.toml: .*{message}"):
        load_config(path)


@pytest.mark.parametrize("algorithm, overrides, message", [
    ("pf", ["filter.subspace=43"], "subspace = 43 exceeds the model's 42 weights"),
    ("dpf", ["filter.subspace=4", "filter.proposal=linearized"], "takes point particles"),
    ("rpf", ["filter.subspace=4", "filter.kernel=gaussian"], "takes point particles"),
    ("cpf", ["filter.subspace=43"], "exceeds"),
])
def test_the_algorithms_refuse_a_subspace_they_cannot_take(tmp_path, algorithm, overrides,
                                                           message):
    from mcdpf.algorithms import traits
    from mcdpf.topology import named_topology

    path = tmp_path / "c.toml"
    path.write_text(MINIMAL)
    config = load_config(path, [f"run.algorithm={algorithm}", *overrides])
    model = build_model(config.model, 2)
    with pytest.raises(InputError, match=f"c.toml: .*{message}"):
        traits(algorithm).check(config, model, named_topology("ring", 2))


def test_a_subspace_larger_than_the_model_exits_2_on_every_rank(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL + '[data]\nsource = "synthetic-lstm"\n[run]\nsteps = 5\n')
    result = run_mpi(2, "train", path, "--out", tmp_path / "o", "--set",
                     "filter.subspace=100000")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert lines and all("subspace = 100000 exceeds" in line for line in lines)
    assert "Traceback" not in result.stderr
