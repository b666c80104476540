"""``filter.walk_steps = "auto"`` in a real run: the s it chose, reported and used."""

import numpy as np
import pytest
from helpers import config_file
from mpi4py import MPI

from mcdpf.config import load_config
from mcdpf.driver import train
from mcdpf.report import summarize
from mcdpf.topology import named_topology

pytestmark = pytest.mark.mpi

COMPARED = ("prediction", "theta_mean", "ess", "particles_held", "particles_received",
            "bytes_sent")


def test_auto_walk_steps_is_reported_and_equals_that_explicit_walk(mpi_tmp_path):
    comm = MPI.COMM_WORLD
    path = config_file(comm, mpi_tmp_path, '[topology]\nname = "ring"\nwalk = "lazy"\n'
                       '[data]\nsource = "synthetic-lstm"\n')
    overrides = ["run.steps=12", "filter.particles=20", "run.progress_seconds=0"]
    expected = named_topology("ring", comm.size, walk="lazy").auto_walk_steps
    auto = train(comm, load_config(path, overrides + ["filter.walk_steps=\"auto\""]),
                 mpi_tmp_path / "auto")
    explicit = train(comm, load_config(path, overrides + [f"filter.walk_steps={expected}"]),
                     mpi_tmp_path / "explicit")
    assert auto["attributes"]["walk_steps"] == explicit["attributes"]["walk_steps"] == expected
    for key in COMPARED:
        np.testing.assert_array_equal(auto["datasets"][key], explicit["datasets"][key],
                                      err_msg=key)
    comm.Barrier()
    if comm.rank == 0:
        assert summarize(mpi_tmp_path / "auto")["walk_steps"] == expected
    if comm.size > 1:  # the walk moved particles s times per step
        assert auto["datasets"]["bytes_sent"].sum() > 0


def test_algorithms_without_a_walk_report_zero_walk_steps(mpi_tmp_path):
    comm = MPI.COMM_WORLD
    path = config_file(comm, mpi_tmp_path, '[topology]\nname = "ring"\n'
                       '[data]\nsource = "synthetic-lstm"\n')
    config = load_config(path, ["run.algorithm=pf", "run.steps=5", "filter.particles=10",
                                "run.progress_seconds=0", "filter.walk_steps=\"auto\""])
    assert train(comm, config, mpi_tmp_path / "pf")["attributes"]["walk_steps"] == 0
