#!/usr/bin/env bash
# Train on this machine with K MPI ranks (one per network node), then report.
#
#   launch/local.sh CONFIG.toml [K] [extra mcdpf train arguments...]
#
# K defaults to the topology's node count (what `mcdpf topology` prints for a file, or
# topology.nodes). Uses the mpiexec beside the active Python (the mpich wheel from
# `pip install -e ".[test]"`), else the one on PATH. The run goes to runs/<config name>
# unless --out is given; an existing run is kept unless --force.
set -euo pipefail
config=${1:?usage: launch/local.sh CONFIG.toml [K] [mcdpf train arguments...]}
shift
ranks=${1:-}
if [[ -n "$ranks" && "$ranks" =~ ^[0-9]+$ ]]; then shift; else ranks=""; fi
if [[ -z "$ranks" ]]; then
  ranks=$(python - "$config" <<'PY'
import sys
from mcdpf.config import load_config
from mcdpf.topology import read_topology_file
config = load_config(sys.argv[1])
spec = config.topology
if spec.file:
    print(read_topology_file(spec.file).nodes)
else:
    print(spec.nodes or 4)
PY
)
fi
mpiexec=$(dirname "$(command -v python)")/mpiexec
[[ -x "$mpiexec" ]] || mpiexec=mpiexec
out=runs/$(basename "${config%.toml}")
for arg in "$@"; do [[ "${prev:-}" == "--out" ]] && out=$arg; prev=$arg; done
echo "launch/local.sh: $mpiexec -n $ranks mcdpf train $config $*" >&2
"$mpiexec" -n "$ranks" mcdpf train "$config" "$@"
mcdpf report "$out" --plot "$out/mse.png"
