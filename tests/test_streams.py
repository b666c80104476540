"""Streams: data sets, generators, partitions, HDF5 stream files and their validation."""

import h5py
import numpy as np
import pytest

from mcdpf.config import load_config
from mcdpf.errors import InputError
from mcdpf.io import read_stream_file, write_stream_file
from mcdpf.sources import (
    hk_exchange_stream,
    hk_exchange_table,
    node_stream,
    partition_indices,
    seattle_weather_stream,
    synthetic_lstm_stream,
)
from mcdpf.streams import Stream, handle_nonfinite


def data_config(tmp_path, **data):
    lines = ['[topology]\nname = "ring"\n[data]']
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in data.items()]
    path = tmp_path / "c.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path).data


def test_hk_exchange_shipped_and_scaled():
    dates, rates = hk_exchange_table()
    assert rates.shape == (502, 2) and dates[0] == "1-Apr-05" and dates[-1] == "30-Mar-07"
    assert rates[:, 0].min() == pytest.approx(7.7506) and rates[:, 0].max() == pytest.approx(7.8177)
    stream = hk_exchange_stream(window=2)
    assert stream.steps == 500 and stream.input_dim == 2
    assert np.all(np.diff(stream.offsets) == 2)
    assert stream.columns.min() == pytest.approx(-1) and stream.columns.max() == pytest.approx(1)
    # label of sequence t is the HKD/USD rate of the day after its window
    scaled_hk = 2 * (rates[:, 0] - rates[:, 0].min()) / np.ptp(rates[:, 0]) - 1
    np.testing.assert_allclose(stream.targets, scaled_hk[2:])
    np.testing.assert_allclose(stream.sequence(10)[:, 0], scaled_hk[10:12])


def test_seattle_weather_shipped_scaled_and_interleaved(tmp_path):
    stream = seattle_weather_stream(window=3)
    assert stream.steps == 1461 - 3 and stream.input_dim == 4
    assert np.all(np.diff(stream.offsets) == 3)
    assert stream.columns.min() == pytest.approx(-1) and stream.columns.max() == pytest.approx(1)
    # the label is the next day's temp_max, column 0 of the day after the window
    np.testing.assert_allclose(stream.targets[:-1], [stream.sequence(t + 1)[-1, 0]
                                                     for t in range(stream.steps - 1)])
    zscored = seattle_weather_stream(window=3, scaling="zscore")
    assert abs(zscored.targets.mean()) < 0.01 and zscored.targets.std() == pytest.approx(1, 0.01)
    data = data_config(tmp_path, source="seattle-weather", window=3, partition="interleave")
    parts = [node_stream(data, None, 16, k) for k in range(16)]
    assert all(part.steps == (1461 - 3) // 16 for part in parts)
    # node k holds days k, k + 16, ...: at each step the 16 nodes see 16 consecutive days
    np.testing.assert_array_equal(parts[5].targets[:3], stream.targets[[5, 21, 37]])
    with pytest.raises(InputError, match="gives each of 16 nodes only 91 steps"):
        node_stream(data, 92, 16, 0)


@pytest.mark.parametrize("scheme", ["replicate", "interleave", "shard"])
def test_partitions_cover_the_stream(scheme):
    nodes, total = 4, 103
    parts = [partition_indices(total, nodes, k, scheme) for k in range(nodes)]
    if scheme == "replicate":
        assert all(np.array_equal(p, np.arange(total)) for p in parts)
    else:
        joined = np.sort(np.concatenate(parts))
        assert np.array_equal(joined, np.arange(4 * (total // 4)))
        assert all(p.size == total // 4 for p in parts)
    if scheme == "interleave":
        assert np.array_equal(parts[1][:3], [1, 5, 9])


def test_node_streams_of_generators_are_seeded_and_sized(tmp_path):
    data = data_config(tmp_path, source="synthetic-lstm", seed=4, min_length=1, max_length=9)
    a = node_stream(data, 50, 3, 1)
    b = node_stream(data, 50, 3, 1)
    assert a.steps == 50
    np.testing.assert_array_equal(a.columns, b.columns)
    np.testing.assert_array_equal(a.targets, b.targets)
    lengths = np.diff(a.offsets)
    assert lengths.min() >= 1 and lengths.max() <= 9 and len(set(lengths.tolist())) > 3
    other = node_stream(data, 50, 3, 2)
    assert not np.array_equal(a.targets, other.targets)


def test_synthetic_teacher_is_learnable_signal(tmp_path):
    data = data_config(tmp_path, source="synthetic-lstm", noise_std=0.0)
    stream = synthetic_lstm_stream(data, 200)
    assert np.std(stream.targets) > 0.01  # the teacher's outputs vary with the input


def test_linear_gaussian_shares_theta_across_nodes_per_step(tmp_path):
    data = data_config(tmp_path, source="linear-gaussian", noise_std=0.0, drift_std=0.0)
    from mcdpf.kalman import mean_columns
    streams = [node_stream(data, 30, 3, k) for k in range(3)]
    design = np.vstack([mean_columns(s) for s in streams])
    targets = np.concatenate([s.targets for s in streams])
    theta, *_ = np.linalg.lstsq(design, targets, rcond=None)
    np.testing.assert_allclose(design @ theta, targets, atol=1e-10)


def test_too_many_steps_is_an_input_error(tmp_path):
    data = data_config(tmp_path, source="hk-exchange")
    with pytest.raises(InputError, match="only 125 steps"):
        node_stream(data, 200, 4, 0)


def test_stream_file_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    streams = []
    for _ in range(3):
        lengths = rng.integers(1, 6, size=20)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        streams.append(Stream(rng.standard_normal((offsets[-1], 2)), offsets,
                              rng.standard_normal(20)))
    path = tmp_path / "s.h5"
    write_stream_file(path, streams)
    for k in range(3):
        got = read_stream_file(path, k, 3)
        np.testing.assert_array_equal(got.columns, streams[k].columns)
        np.testing.assert_array_equal(got.offsets, streams[k].offsets)
        np.testing.assert_array_equal(got.targets, streams[k].targets)


def test_one_dimensional_inputs_are_p_equal_one(tmp_path):
    path = tmp_path / "p1.h5"
    with h5py.File(path, "w") as handle:
        group = handle.create_group("node0")
        group["d"] = np.arange(3.0)
        group["X"] = np.arange(5.0)
        group["offsets"] = np.array([0, 2, 3, 5], dtype=np.int64)
    stream = read_stream_file(path, 0, 1)
    assert stream.input_dim == 1
    np.testing.assert_array_equal(stream.sequence(2)[:, 0], [3.0, 4.0])


def good_group(handle, name, steps=4, p=2):
    group = handle.create_group(name)
    group["d"] = np.zeros(steps)
    group["X"] = np.zeros((2 * steps, p))
    group["offsets"] = np.arange(steps + 1, dtype=np.int64) * 2
    return group


def make_file(tmp_path, mutate):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as handle:
        for k in range(2):
            good_group(handle, f"node{k}")
        mutate(handle)
    return path


def _replace(name, value):
    def mutate(handle):
        del handle[name]
        handle[name] = value
    return mutate


@pytest.mark.parametrize("mutate, message", [
    (lambda h: h.__delitem__("node1"), "missing group 'node1'"),
    (lambda h: good_group(h, "node2"), "group 'node2' has no node"),
    (lambda h: h["node1"].__delitem__("offsets"), "node1/offsets is missing"),
    (_replace("node1/offsets", np.array([0, 2, 1, 6, 8])), "sequence 1 has -1 columns"),
    (_replace("node1/offsets", np.array([0, 2, 4, 6, 9])), "end at the number of X rows"),
    (_replace("node1/offsets", np.array([0, 2, 4])), "offsets has shape"),
    (_replace("node1/offsets", np.array([0.0, 2, 4, 6, 8])), "expected int64"),
    (_replace("node1/X", np.zeros((8, 1, 1))), "X has shape"),
    (_replace("node1/d", np.zeros((4, 1))), "d has shape"),
    (_replace("node1/d", np.array([b"a", b"b", b"c", b"d"])), "expected numbers"),
])
def test_malformed_stream_files(tmp_path, mutate, message):
    path = make_file(tmp_path, mutate)
    with pytest.raises(InputError, match=message) as error:
        read_stream_file(path, 1, 2)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_not_hdf5_and_missing(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("hello")
    with pytest.raises(InputError, match="not a readable HDF5"):
        read_stream_file(path, 0, 1)
    with pytest.raises(InputError, match="not found"):
        read_stream_file(tmp_path / "none.h5", 0, 1)


def test_nonfinite_policy():
    stream = Stream(np.array([[0.0], [np.nan], [1.0]]), np.array([0, 1, 2, 3]),
                    np.array([1.0, 2.0, np.inf]))
    with pytest.raises(InputError, match="step 1 has a non-finite"):
        handle_nonfinite(stream, "error", "s")
    cleaned, skipped = handle_nonfinite(stream, "skip", "s")
    assert skipped.tolist() == [False, True, True]
    assert np.all(np.isfinite(cleaned.columns)) and np.all(np.isfinite(cleaned.targets))


def test_sentence_corpus_stream():
    from mcdpf.sentences import LABEL_VALUES, labelled_sentences, sentence_stream

    articles, sentences, labels = labelled_sentences()
    assert len(set(articles)) == 30 and len(sentences) == 1039
    assert all(label in LABEL_VALUES for votes in labels for label in votes)
    stream = sentence_stream(2)
    assert stream.steps == 1039 and stream.input_dim == 2
    lengths = np.diff(stream.offsets)
    assert lengths.min() >= 1 and lengths.max() > 40  # variable length, no padding
    assert stream.columns.shape[0] == lengths.sum()
    np.testing.assert_allclose(stream.columns.std(axis=0), 1.0, rtol=1e-10)
    assert set(np.unique(stream.targets)) <= set(LABEL_VALUES.values())
    again = sentence_stream(2)
    np.testing.assert_array_equal(stream.columns, again.columns)  # deterministic
    assert sentence_stream(5).input_dim == 5


def test_majority_label_and_expert_tie_break():
    from mcdpf.sentences import majority_label

    assert majority_label(["OWNX", "MISC", "OWNX"]) == "OWNX"
    assert majority_label(["AIMX", "MISC", "OWNX"]) == "OWNX"  # no majority: the expert's
    assert majority_label(["MISC", "MISC", "AIMX"]) == "MISC"


def test_corpus_files_rebuild_identically(tmp_path, repo):
    """The shipped files are what build_corpus_files makes of the original UCI folder
    (looked for beside the repository, where the project's data sets came from)."""
    source = repo.parent / "shared" / "data" / "sentence-corpus"
    if not source.is_dir():
        pytest.skip("the original corpus folder is not beside this checkout")
    from importlib import resources

    from mcdpf.sentences import build_corpus_files

    build_corpus_files(source, tmp_path)
    shipped = resources.files("mcdpf.datasets").joinpath("sentences")
    for name in ("labeled.tsv", "unlabeled.txt.gz"):
        assert (tmp_path / name).read_bytes() == shipped.joinpath(name).read_bytes()
