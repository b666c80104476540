"""The v2 particle options from the command line: validation, bytes, determinism, resume.

- bad values of the new keys are one-line errors naming the key (exit 2 under mpiexec);
- a float32 wire halves a float64 dpf's bytes per particle move, and the state noise no
  longer travels (the record is id, log-weight, theta and the carried state);
- rpf, Gaussian particles and every lean dpf option are deterministic, give the same bits
  for 1 and 2 threads, and resume bit-exactly after a kill;
- the registries, the configuration's choices and the command line's help agree.
"""

import h5py
import numpy as np
import pytest
from support import run_mpi

from mcdpf.config import load_config
from mcdpf.errors import InputError
from mcdpf.registry import ALGORITHMS, RESAMPLING, SOURCES, TOPOLOGIES, WALKS

MINIMAL = '[topology]\nname = "ring"\n'
COMPARED = ("prediction", "squared_error", "theta_mean", "ess", "particles_held",
            "particles_received", "bytes_sent", "theta_estimates")


@pytest.mark.parametrize("overrides, message", [
    (["relay.weights=median"], "relay.*weights = \"median\": must be one of uniform, walk"),
    (["relay.hops=0"], "hops = 0: must be >= 1"),
    (["filter.wire_dtype=float64", "model.dtype=float32"], "wider than model.dtype"),
    (["filter.wire_dtype=float16"], "wire_dtype = \"float16\": must be one of"),
    (["filter.proposal=optimal"], "must be one of prior, linearized"),
    (["run.threads=0"], "threads = 0: must be >= 1"),
])
def test_new_keys_are_validated(tmp_path, overrides, message):
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL)
    with pytest.raises(InputError, match=message):
        load_config(path, overrides)


@pytest.mark.parametrize("overrides, message", [
    # dpf takes Gaussian particles now (they migrate); its check still applies the kernel's
    (["filter.kernel=gaussian", "run.algorithm=dpf", "filter.proposal=linearized"],
     "proposal = \"linearized\" is for point particles"),
    (["filter.kernel=gaussian", "run.algorithm=rpf", "filter.proposal=linearized"],
     "proposal = \"linearized\" is for point particles"),
])
def test_the_algorithms_check_refuses_its_variants(tmp_path, overrides, message):
    """Rules of one algorithm live in its ``check`` (set-up), not in the configuration."""
    from mcdpf.algorithms import traits
    from mcdpf.models import build_model
    from mcdpf.topology import named_topology

    path = tmp_path / "c.toml"
    path.write_text(MINIMAL)
    config = load_config(path, overrides)
    model = build_model(config.model, 2)
    with pytest.raises(InputError, match=f"c.toml: .*{message}"):
        traits(config.run.algorithm).check(config, model, named_topology("ring", 2))


def test_too_many_threads_and_gaussian_memory_exit_2(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL + '[data]\nsource = "synthetic-lstm"\n[run]\nsteps = 5\n')
    threads = run_mpi(2, "train", path, "--out", tmp_path / "o", "--set", "run.threads=64")
    assert threads.returncode == 2 and "run.threads = 64" in threads.stderr
    memory = run_mpi(2, "train", path, "--out", tmp_path / "o", "--set", "run.algorithm=rpf",
                     "--set", "filter.kernel=gaussian", "--set", "model.n=16",
                     "--set", "filter.particles=1000", "--set", "ekf.max_memory_gb=1")
    assert memory.returncode == 2 and "Gaussian particles" in memory.stderr


def test_the_oracles_gaussian_memory_counts_its_n_k_particles():
    """cpf holds N K Gaussian particles unless filter.central_particles says otherwise:
    20 covariances of n = 2 (42 parameters: 28 kB each with its working copy, 0.53 MB)
    fit 0.001 GB on one node, 60 on 3 nodes do not (the check once counted only N)."""
    from mcdpf.algorithms import traits
    from mcdpf.models import build_model
    from mcdpf.topology import named_topology

    overrides = {"run.algorithm": "cpf", "filter.kernel": "gaussian",
                 "filter.particles": 20, "ekf.max_memory_gb": 0.001}
    config = load_config({"topology": {"name": "ring"}}, overrides)
    model = build_model(config.model, 2)
    check = traits("cpf").check
    check(config, model, named_topology("ring", 1))
    with pytest.raises(InputError, match="covariances of 60 Gaussian particles"):
        check(config, model, named_topology("ring", 3))
    central = load_config({"topology": {"name": "ring"}},
                          {**overrides, "filter.central_particles": 20})
    check(central, model, named_topology("ring", 3))


def test_the_registries_are_the_configuration_choices_and_the_help():
    from mcdpf.cli import build_parser
    from mcdpf.config import SECTIONS

    def choices(section, key):
        field = {f.name: f for f in __import__("dataclasses").fields(SECTIONS[section])}[key]
        return tuple(field.metadata["choices"])

    assert choices("run", "algorithm") == ALGORITHMS.names()
    assert choices("topology", "name") == TOPOLOGIES.names()
    assert choices("topology", "walk") == WALKS.names()
    assert choices("data", "source") == SOURCES.names()
    assert choices("filter", "resampling") == RESAMPLING.names()
    help_text = build_parser().format_help() + "".join(
        action.format_help() for action in build_parser()._subparsers._group_actions[0]
        .choices.values())
    help_text = " ".join(help_text.split())
    for name in ALGORITHMS:
        assert f"{name}: {ALGORITHMS.entry(name).traits.summary}" in help_text


def write_config(tmp_path, name, text=""):
    path = tmp_path / f"{name}.toml"
    path.write_text('[topology]\nname = "ring"\n[run]\nsteps = 30\ncheckpoint_every = 5\n'
                    'record_estimates = true\nprogress_seconds = 0\n[data]\n'
                    'source = "synthetic-lstm"\n[filter]\nparticles = 30\nwalk_steps = 2\n'
                    + text)
    return path


def assert_same(a_dir, b_dir, ranks):
    for node in range(ranks):
        with h5py.File(a_dir / f"node-{node:04d}.h5") as a, \
                h5py.File(b_dir / f"node-{node:04d}.h5") as b:
            for key in COMPARED:
                np.testing.assert_array_equal(a[key][()], b[key][()], err_msg=f"{node} {key}")


def test_float32_wire_halves_the_bytes_per_move(tmp_path):
    """n = 2: 16 + 46 * 8 = 384 bytes per move in float64 (v1 sent 416, with the state
    noise), 16 + 46 * 4 = 200 in float32; n = 16: 10 128 against 5 072 (v1: 10 384)."""
    from mcdpf.dpf import wire_record_dtype
    from mcdpf.models import build_model

    for n, full, lean in ((2, 384, 200), (16, 10128, 5072)):
        model = build_model(load_config({"topology": {"name": "ring"}, "model": {"n": n}}).model,
                            2)
        assert wire_record_dtype(model).itemsize == full
        assert wire_record_dtype(model, "float32").itemsize == lean
        v1 = 16 + (model.n_params + 2 * model.n_carry) * 8
        assert lean <= v1 / 2
    config = write_config(tmp_path, "dpf")
    out = {}
    for name, extra in (("wide", []), ("lean", ["--set", "filter.wire_dtype=float32"])):
        result = run_mpi(2, "train", config, "--out", tmp_path / name, "--quiet", *extra)
        assert result.returncode == 0, result.stderr
        with h5py.File(tmp_path / name / "node-0000.h5") as handle:
            out[name] = (handle["bytes_sent"][()], handle["particles_sent"][()])
    (wide_bytes, wide_sent), (lean_bytes, lean_sent) = out["wide"], out["lean"]
    header = 2 * 16  # two walk steps' stamped counts to the one neighbour
    np.testing.assert_array_equal(wide_bytes - header, wide_sent * 384)
    np.testing.assert_array_equal(lean_bytes - header, lean_sent * 200)


VARIANTS = {
    "rpf": '[run]\nalgorithm = "rpf"\n',
    "rpf-walk": '[run]\nalgorithm = "rpf"\n[relay]\nweights = "walk"\nhops = 1\n',
    "rpf-gaussian": '[run]\nalgorithm = "rpf"\n[filter]\nkernel = "gaussian"\nparticles = 4\n'
                    'ess_threshold = 0.5\n',
    "dpf-lean": '[filter]\nwire_dtype = "float32"\nvisit_centering = true\n'
                'proposal = "linearized"\ness_threshold = 0.5\n',
    "cpf-gaussian": '[run]\nalgorithm = "cpf"\n[filter]\nkernel = "gaussian"\n'
                    'central_particles = 6\n',
    "dpf-subspace": '[filter]\nsubspace = 12\n',
    "dpf-gaussian": '[filter]\nkernel = "gaussian"\nparticles = 4\ness_threshold = 0.5\n',
    "dpf-gaussian-lean": '[filter]\nkernel = "gaussian"\ncovariance = "lowrank"\nrank = 3\n'
                         'particles = 4\nwire_dtype = "float32"\nvisit_centering = true\n'
                         'migration = "balanced"\n',
    "rpf-subspace": '[run]\nalgorithm = "rpf"\n[filter]\nsubspace = 12\n',
}


def merged(tmp_path, name):
    """A config with the variant's tables merged into the common ones (TOML tables once)."""
    import tomllib

    common = tomllib.loads(write_config(tmp_path, "base").read_text())
    for section, table in tomllib.loads(VARIANTS[name]).items():
        common.setdefault(section, {}).update(table)
    lines = []
    for section, table in common.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {value!r}".replace("'", '"').replace("True", "true")
                  .replace("False", "false") for key, value in table.items()]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variants_are_deterministic_across_threads_and_resume_bit_exactly(tmp_path, name):
    config = merged(tmp_path, name)
    ranks = 3
    reference = run_mpi(ranks, "train", config, "--out", tmp_path / "ref", "--quiet")
    assert reference.returncode == 0, reference.stderr
    # NUMBA_NUM_THREADS=2: numba's default is the process's CPU affinity, which a launcher
    # may bind to one core; two threads must give the same bits whatever the cores.
    threaded = run_mpi(ranks, "train", config, "--out", tmp_path / "two", "--quiet", "--set",
                       "run.threads=2", env={"NUMBA_NUM_THREADS": "2"})
    assert threaded.returncode == 0, threaded.stderr
    assert_same(tmp_path / "ref", tmp_path / "two", ranks)
    assert_resumes_bit_exactly(tmp_path, config, ranks)


def assert_resumes_bit_exactly(tmp_path, config, ranks, run=run_mpi):
    """A run killed at step 17 and resumed equals the run in ``tmp_path / "ref"``."""
    crashed = run(ranks, "train", config, "--out", tmp_path / "run", "--quiet", "--set",
                  "faults.kill=[[1, 17]]", timeout=120)
    assert crashed.returncode not in (0, 2)
    resumed = run(ranks, "train", config, "--resume", tmp_path / "run", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert_same(tmp_path / "ref", tmp_path / "run", ranks)
