"""Warm-up units: a run loads, before its loop, every kernel its loop calls, and no more.

Each case trains one node for a few steps in a fresh interpreter (a dispatcher keeps what
it loaded for the life of the process) and compares the compiled signatures of every
numba dispatcher of :mod:`mcdpf.kernels` right after set-up's warm-up with those after
the loop: a kernel first loaded inside the loop is a unit the algorithm's ``kernels``
trait forgot (it would compile inside the timed loop on a cold cache).
"""

import json
import subprocess
import sys

import pytest
from support import HANG_TIMEOUT, REPO

from mcdpf import kernels
from mcdpf.registry import ALGORITHMS

PROBE = r"""
import gc, json, sys
import numba
from mpi4py import MPI
import mcdpf
from mcdpf import driver, warmup

def loaded():
    return {f"{obj.py_func.__module__}.{obj.py_func.__name__}": len(obj.signatures)
            for obj in gc.get_objects()
            if isinstance(obj, numba.core.dispatcher.Dispatcher)
            and obj.py_func.__module__.startswith("mcdpf.kernels") and obj.signatures}

after_warm_up = {}
def prepare(*args):
    warmup.prepare_kernels(*args)
    after_warm_up.update(loaded())
driver.prepare_kernels = prepare
config = mcdpf.load_config({"run": {"steps": 3, "seed": 1}, "topology": {"name": "ring"},
                            "model": {"n": 2}}, overrides=sys.argv[1:])
mcdpf.train(config, MPI.COMM_WORLD)
late = {name: count for name, count in loaded().items() if after_warm_up.get(name) != count}
print(json.dumps({"late": sorted(late), "warmed": sorted(after_warm_up)}))
"""

CASES = {name: [f"run.algorithm={name}"] for name in ALGORITHMS.names()} | {
    "pf-gaussian": ["run.algorithm=pf", "filter.kernel=gaussian", "filter.particles=3"],
    **{f"rpf-gaussian-{form}": ["run.algorithm=rpf", "filter.kernel=gaussian",
                                "filter.particles=3", f"filter.covariance={form}"]
       for form in ("diagonal", "decoupled", "lowrank")},
    **{f"ekf-{form}": ["run.algorithm=ekf", f"ekf.covariance={form}"]
       for form in ("diagonal", "decoupled", "lowrank")},
    "pf-linearized": ["run.algorithm=pf", "filter.proposal=linearized"],
    "pf-multinomial": ["run.algorithm=pf", "filter.resampling=multinomial"],
    "pf-large-model": ["run.algorithm=pf", "model.n=8", "filter.particles=4"],
    "dpf-subspace": ["filter.subspace=5"],
    **{f"dpf-gaussian-{form}": ["filter.kernel=gaussian", "filter.particles=3",
                                f"filter.covariance={form}", "filter.wire_dtype=float32"]
       for form in ("full", "lowrank")},
    "dpf-float32": ["model.dtype=float32"],
    "linear": ["model.kind=linear", "run.algorithm=ekf"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_warm_up_loads_every_kernel_the_loop_calls(case):
    probe = subprocess.run([sys.executable, "-c", PROBE, *CASES[case]], capture_output=True,
                           text=True, cwd=REPO, timeout=HANG_TIMEOUT)
    assert probe.returncode == 0, probe.stderr
    result = json.loads(probe.stdout.splitlines()[-1])
    assert result["warmed"], "the warm-up loaded nothing"
    assert result["late"] == [], f"first loaded inside the loop: {result['late']}"


def test_every_kernel_belongs_to_a_warm_up_unit():
    """The cold-cache check and ``mcdpf warmup`` (every unit) cover every ``*_kernel``."""
    covered = {kernel for unit in kernels.KERNEL_UNITS
               for kernel in kernels._unit_kernels(unit, parallel=True)}
    named = {value for name, value in vars(kernels).items() if name.endswith("_kernel")}
    assert named <= covered, sorted(k.py_func.__name__ for k in named - covered)


def test_unknown_warm_up_unit_is_refused():
    with pytest.raises(ValueError, match="unknown warm-up units"):
        kernels.warm_up("float64", units=["lstm_forward"])
