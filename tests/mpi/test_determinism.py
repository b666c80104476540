"""Same seed and same K: bit-identical predictions, errors, estimates and diagnostics."""

import numpy as np
import pytest
from mpi4py import MPI

from mcdpf.config import load_config
from mcdpf.driver import train

pytestmark = pytest.mark.mpi

COMPARED = ("prediction", "squared_error", "theta_mean", "ess", "particles_held",
            "particles_received", "bytes_sent")


@pytest.mark.parametrize("algorithm", ["dpf", "pf"])
def test_same_seed_same_outputs(mpi_tmp_path, algorithm):
    comm = MPI.COMM_WORLD
    path = mpi_tmp_path / "c.toml"
    if comm.rank == 0:
        path.write_text('[topology]\nname = "complete"\n[data]\nsource = "synthetic-lstm"\n')
    comm.Barrier()
    overrides = [f"run.algorithm={algorithm}", "run.steps=25", "filter.particles=30",
                 "run.progress_seconds=0", "run.record_estimates=true", "run.seed=9"]
    config = load_config(path, overrides)
    first = train(comm, config, mpi_tmp_path / "a")["datasets"]
    second = train(comm, config, mpi_tmp_path / "b")["datasets"]
    for key in COMPARED + ("theta_estimates",):
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    changed = train(comm, load_config(path, overrides + ["run.seed=10"]),
                    mpi_tmp_path / "c")["datasets"]
    assert not np.array_equal(first["prediction"], changed["prediction"])
