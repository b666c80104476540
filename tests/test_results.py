"""Results in the user's units (DESIGN §10): the scaling record, mcdpf.read_run, export.

Every subprocess runs under support.run's timeout (a hang fails the test).
"""

import csv
import json
import math

import h5py
import numpy as np
import pytest
from support import mcdpf_command, run, run_mpi

import mcdpf
from mcdpf.results import CSV_COLUMNS
from mcdpf.sources import hk_exchange_table, scale_series
from mcdpf.streams import Scaling

# Original = offset + scale * scaled recomputes the data from its scaled form: equal up to
# a few float64 roundings of numbers of the data's magnitude.
ROUNDING = 1e-12


@pytest.mark.parametrize("method", ["minmax", "zscore"])
def test_scaling_maps_scaled_series_back_to_the_data(method):
    _, rates = hk_exchange_table()
    scaled, scaling = scale_series(rates, method)
    assert scaling.method == method and scaling.scaled
    np.testing.assert_allclose(scaling.inputs_to_original(scaled), rates, rtol=ROUNDING)
    np.testing.assert_allclose(scaling.target_to_original(scaled[:, 0]), rates[:, 0],
                               rtol=ROUNDING)
    if method == "minmax":
        assert scaled.min() == -1.0 and scaled.max() == 1.0
    assert Scaling.from_json(scaling.to_json()) == scaling
    assert Scaling.from_json(Scaling().to_json()) == Scaling()
    assert json.loads(Scaling().to_json()) == "none"


def test_read_run_is_public():
    assert "read_run" in mcdpf.__all__
    assert mcdpf.read_run.__doc__ and "original units" in mcdpf.read_run.__doc__


def user_table(path, rows: int = 40):
    """A CSV in its own units: a price near 1000 and a volume in the millions."""
    rng = np.random.default_rng(7)
    price = 1000.0 + np.cumsum(rng.normal(0.0, 3.0, rows))
    volume = 2.0e6 + 1.0e5 * rng.random(rows)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["date", "price", "volume"])
        for t in range(rows):
            writer.writerow([f"day{t}", repr(float(price[t])), repr(float(volume[t]))])
    return price


@pytest.mark.parametrize("ranks", [1, 2])
def test_user_csv_round_trip_in_original_units(tmp_path, ranks):
    window, steps = 2, 15
    price = user_table(tmp_path / "table.csv")
    config = tmp_path / "c.toml"
    config.write_text(f'[run]\nalgorithm = "pf"\nsteps = {steps}\nprogress_seconds = 0\n'
                      f'[topology]\nname = "complete"\nnodes = {ranks}\n'
                      f'[data]\nsource = "csv"\npath = "{tmp_path / "table.csv"}"\n'
                      f'window = {window}\npartition = "interleave"\n'
                      '[filter]\nparticles = 20\n[model]\nn = 1\n')
    out = tmp_path / "run"
    result = run_mpi(ranks, "train", config, "--quiet", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]

    results = mcdpf.read_run(out)
    assert results.n_nodes == ranks and results.steps == steps
    assert results.units == "scaled" and results.config["data"]["source"] == "csv"
    for node in results.nodes:
        # interleave: node k's step t is the table's sample k + K t, labelled by the
        # price of the row after its window
        expected = price[window + node.node + ranks * np.arange(steps)]
        np.testing.assert_allclose(node.targets, expected, rtol=ROUNDING)
        assert np.all(np.abs(node.targets_scaled) <= 1.0)
        scale = (price.max() - price.min()) / 2.0
        np.testing.assert_allclose(node.predictions - node.targets,
                                   -scale * node.errors_scaled, rtol=1e-9,
                                   atol=ROUNDING * np.abs(price).max())
        np.testing.assert_allclose(node.errors, node.targets - node.predictions)
        assert node.mse == pytest.approx(scale ** 2 * node.mse_scaled, rel=1e-9)
        assert node.valid_until == steps and node.dropped_at is None
        assert node.records["bytes_sent"].shape == (steps,)
        assert np.isfinite(node.records["ess"]).all()
    assert results.targets.shape == (ranks, steps)
    assert results.network_mse == pytest.approx(np.mean([n.mse for n in results.nodes]))

    report = run(mcdpf_command("report", out, "--json"))
    assert report.returncode == 0, report.stderr
    summary = json.loads(report.stdout)
    assert summary["mse_units"] == "scaled" and summary["scaling"] == "minmax"
    assert summary["network_mse"] == pytest.approx(results.network_mse_scaled)
    assert summary["network_mse_original"] == pytest.approx(results.network_mse)
    text = run(mcdpf_command("report", out)).stdout
    assert "MSE in scaled units: data.scaling = \"minmax\"" in text
    assert "in the data's original units: network MSE" in text

    exported = tmp_path / "out.csv"
    done = run(mcdpf_command("export", out, "--csv", exported))
    assert done.returncode == 0, done.stderr
    with open(exported, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == ranks * steps
    for row in rows:
        node, step = results[int(row["node"])], int(row["step"])
        assert float(row["target"]) == node.targets[step]
        assert float(row["prediction"]) == node.predictions[step]
        assert float(row["target_scaled"]) == node.targets_scaled[step]
        assert float(row["prediction_scaled"]) == node.predictions_scaled[step]
        assert math.isclose(float(row["target"]), price[window + node.node + ranks * step],
                            rel_tol=ROUNDING)


def test_unscaled_data_are_in_original_units_and_missing_paths_fail_in_one_line(tmp_path):
    out = tmp_path / "run"
    result = run_mpi(1, "train", "--quiet", "--out", out, tmp_config(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    results = mcdpf.read_run(out)
    assert results.units == "original"
    np.testing.assert_array_equal(results.targets, results.targets_scaled)
    np.testing.assert_array_equal(results.predictions, results.predictions_scaled)
    summary = json.loads(run(mcdpf_command("report", out, "--json")).stdout)
    assert summary["mse_units"] == "original"
    assert summary["network_mse_original"] == pytest.approx(summary["network_mse"])

    missing = run(mcdpf_command("export", out, "--csv", tmp_path / "no" / "x.csv"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"mcdpf: error: {tmp_path / 'no' / 'x.csv'}: cannot write (No such file or "
        "directory)"]
    absent = run(mcdpf_command("export", tmp_path / "nothing", "--csv", tmp_path / "x.csv"))
    assert absent.returncode == 2 and len(absent.stderr.strip().splitlines()) == 1

    # a file written before the scaling record: its original units are unknown
    with h5py.File(out / "node-0000.h5", "a") as handle:
        del handle.attrs["scaling"]
    old = mcdpf.read_run(out)
    assert old.units == "unknown" and old[0].targets is None and math.isnan(old.network_mse)
    summary = json.loads(run(mcdpf_command("report", out, "--json")).stdout)
    assert summary["mse_units"] == "unknown" and summary["network_mse_original"] is None
    assert run(mcdpf_command("export", out, "--csv", tmp_path / "old.csv")).returncode == 0
    with open(tmp_path / "old.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(row["target"] == "" and row["target_scaled"] != "" for row in rows)


def tmp_config(tmp_path):
    path = tmp_path / "synthetic.toml"
    path.write_text('[run]\nalgorithm = "sgd"\nsteps = 12\n[topology]\nname = "complete"\n'
                    'nodes = 1\n[data]\nsource = "synthetic-lstm"\n[model]\nn = 1\n')
    return path
