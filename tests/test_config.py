"""Configuration: defaults, types, ranges, unknown keys, overrides, relative paths."""

import pytest

from mcdpf.config import load_config, parse_override, reference_table
from mcdpf.errors import InputError

MINIMAL = '[topology]\nname = "ring"\n'


def write(tmp_path, text, name="c.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), ["filter.particles=7", "run.algorithm=pf",
                                                     "model.dtype=\"float32\"",
                                                     "filter.state_noise=1e-3"])
    assert config.filter.particles == 7
    assert config.run.algorithm == "pf"
    assert config.model.dtype == "float32"
    assert config.filter.state_noise == 1e-3
    assert config.filter.obs_noise == 0.01
    assert config.model.n == 2


def test_relative_paths_follow_the_config_file_and_the_cwd(tmp_path, monkeypatch):
    sub = tmp_path / "sub"
    sub.mkdir()
    config = load_config(write(sub, '[topology]\nfile = "t.toml"\n'))
    assert config.topology.file == str(sub / "t.toml")
    monkeypatch.chdir(tmp_path)
    config = load_config(write(sub, MINIMAL), ["data.source=file", "data.path=x.h5"])
    assert config.data.path == str(tmp_path / "x.h5")


@pytest.mark.parametrize("text, message", [
    (MINIMAL + "[filter]\nparticle = 3\n", "unknown key 'particle'.*did you mean 'particles'"),
    (MINIMAL + "[filtre]\nparticles = 3\n", "unknown section \\[filtre\\].*did you mean 'filter'"),
    (MINIMAL + "[filter]\nparticles = 0\n", "particles = 0: must be >= 1"),
    (MINIMAL + "[filter]\nparticles = 2.5\n", "must be an integer"),
    (MINIMAL + "[filter]\nparticles = true\n", "must be an integer"),
    (MINIMAL + "[filter]\nobs_noise = 0\n", "must be > 0"),
    (MINIMAL + "[filter]\ness_threshold = 1.5\n", "must be <= 1.0"),
    (MINIMAL + "[adam]\nbeta1 = 1.0\n", "\\[adam\\] beta1 = 1.0: must be < 1.0"),
    (MINIMAL + "[adam]\nbeta2 = -0.1\n", "\\[adam\\] beta2 = -0.1: must be >= 0.0"),
    (MINIMAL + "[adam]\nlearning_rate = 0\n", "\\[adam\\] learning_rate = 0: must be > 0"),
    (MINIMAL + "[adam]\nepsilon = 1e-8\n", "unknown key 'epsilon'.*did you mean 'eps'"),
    (MINIMAL + "[filter]\nresampling = \"sytematic\"\n", "did you mean 'systematic'"),
    (MINIMAL + "[model]\ncarry_state = 1\n", "true or false"),
    (MINIMAL + "[run]\nalgorithm = \"mcmc\"\n", "must be one of"),
    ("[topology]\nname = \"ring\"\nfile = \"x.toml\"\n", "exactly one of"),
    ("[run]\nseed = 1\n", "exactly one of"),
    (MINIMAL + "[data]\nsource = \"file\"\n", "needs 'path'"),
    (MINIMAL + "[data]\nmin_length = 5\nmax_length = 2\n", "exceeds"),
    ("run = 3\n" + MINIMAL, "must be a \\[run\\] table"),
    ("[topology\n", "invalid TOML"),
])
def test_bad_configs_are_one_line_errors_naming_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError, match=message) as error:
        load_config(path)
    assert "\n" not in str(error.value)
    assert str(path) in str(error.value)


def test_bad_overrides(tmp_path):
    path = write(tmp_path, MINIMAL)
    with pytest.raises(InputError, match="--set filter.particle.*did you mean"):
        load_config(path, ["filter.particle=3"])
    with pytest.raises(InputError, match="expected section.key=VALUE"):
        load_config(path, ["particles=3"])
    with pytest.raises(InputError, match="must be an integer"):
        load_config(path, ["filter.particles=many"])


def test_missing_file():
    with pytest.raises(InputError, match="not found"):
        load_config("/nonexistent/config.toml")


def test_override_values_are_toml_or_bare_strings():
    assert parse_override("run.steps=12") == ("run", "steps", 12)
    assert parse_override("run.algorithm=pf") == ("run", "algorithm", "pf")
    assert parse_override("faults.drop=[[1, 5]]") == ("faults", "drop", [[1, 5]])
    assert parse_override("model.carry_state=false") == ("model", "carry_state", False)


def test_resolved_config_round_trips_through_json(tmp_path):
    import json

    config = load_config(write(tmp_path, MINIMAL), ["filter.particles=9"])
    assert json.loads(config.to_json())["filter"]["particles"] == 9


def test_reference_table_lists_every_key():
    table = reference_table()
    for key in ("run.algorithm", "filter.walk_steps", "data.partition", "model.carry_state",
                "topology.walk", "adam.learning_rate", "adam.beta1", "adam.beta2", "adam.eps"):
        assert f"`{key}`" in table


def test_documented_configuration_table_is_current(repo):
    from sync_docs import reference_in

    assert reference_in((repo / "docs" / "user-guide.md").read_text()) == \
        reference_table().strip(), "run: python tests/sync_docs.py"
