"""Cluster performance model: step time and weak scaling of dpf, rpf and dekf at K = 1 .. 1024.

    python benchmarks/cluster_model.py [--quick] [--json benchmarks/results/cluster_model.json]
                                       [--plot benchmarks/results/cluster_model.png]

Options: ``--quick`` (few repeats, K <= 64, small MPI sizes: a smoke test), ``--json``
and ``--plot`` (where the results go; ``--plot ""``: no figure). The script starts itself
twice more under ``mpiexec -n 2`` with ``--mpi-constants-worker FILE`` (MPI constants)
and ``--validation-worker FILE`` (real K = 2 steps), each writing its measurements to FILE
as JSON; these two modes can also be run by hand.

The code is in three modules of ``benchmarks/cluster/``: ``measure`` (everything timed on
this machine), ``model`` (the model below: pure arithmetic on the constants, unit-tested
in ``tests/test_cluster_model.py``) and ``report`` (tables, predictions, JSON, figure).

Predicts the per-step time of ``dpf``, ``rpf`` and ``dekf`` at K = 1, 2, 4, 16, 64, 256,
1024 nodes (one MPI rank per network node, one rank per core) on the ``ring``, 2-D
``torus`` and ``random`` graphs of :func:`mcdpf.topology.named_topology`, from constants
measured on this machine and documented interconnect figures, and the weak-scaling
efficiency ``E(K) = T(1) / T(K)`` (same work per node). Two model sizes:

- **papers' scale**: n = 2, p = 2, m = 2, N = 80, s = 3, float64, the papers' simple walk
  (P_move = 1);
- **n = 16**: n = 16, p = 4, m = 10, N = 1000, s = 3, float64, the lazy walk (P_move = 0.5).

What is measured here (printed, and written to the JSON with its spread):

- ``t_col``: seconds per particle-column of the LSTM forward (``lstm_mean_states``);
- ``t_normal``: seconds per normal of the fused gather + noise kernel (``gather_add_normal``,
  the parameter noise, rows of n_theta) and of ``normal_rows`` on rows of 2n (the state
  noise, regenerated for every arrival);
- the pf step's overhead beyond kernel + noise (``a0 + a1 N``: fitted over N), dpf's walk
  overhead per walk step (``w0 + w1 N_held + w_move N_moved``: dpf at K = 1, and dpf on a
  loopback neighbourhood whose movers come straight back, i.e. the walk's local work
  without MPI), rpf's overhead per extra stream (a particle filter over b copies of the
  node's stream) and per relayed measurement (``Relay`` on a fake neighbourhood);
- dekf: one linearisation (``lstm_prediction_gradient`` through the learner), one EKF
  update (``gaussian_update`` through the learner), ``P += qI``, and the rest of a step;
- MPI (``mpiexec -n 2``): ping-pong and ``Neighbor_alltoallv`` of 8 B .. 4 MB, each fitted
  ``t = latency + bytes / bandwidth``; the per-call cost of a neighbourhood collective on
  an empty graph; the cost of each extra neighbour (graphs with the other rank listed
  r = 1, 2, 4 times); and mcdpf's own exchange wrappers (``Neighbourhood.exchange``,
  ``exchange_vectors``, ``allgatherv`` + ``allgather``), whose time beyond the modelled
  transport is their software cost.

Compute constants are CPU time of this thread (``time.thread_time``, minimum over repeats):
the machine is shared, and a cluster core runs one rank. MPI constants are wall time.

Model (per step and node ``k`` with degree ``d_k``; ``e(n)`` is the expected maximum of n
standard normals; the step time reported is the maximum over nodes, because neighbour
exchanges couple each node to its neighbours and, transitively over steps, the slowest node
paces the network):

- **dpf**: own work ``N m t_col + N n_theta t_normal + N 2n t_state + a0 + a1 N_held``;
  then ``s`` walk steps, each ``w0 + w1 h + w_move h P + a (m t_col + 2n t_state)`` with
  ``h`` the expected particles held (``h <- h A``, from N at every node; on irregular graphs
  loads follow the walk) and ``a`` the expected arrivals, plus their fluctuation
  ``sqrt(a) e(d_k + 1)`` (Poisson arrivals; a node waits for the busiest neighbour), then
  one exchange: a stamped handshake (16 B per neighbour) and the records (``16 + (n_theta +
  2n) 8`` B each, ``h_k A[k, j]`` to neighbour j). The walk segment is the maximum over
  the node's closed neighbourhood (it must wait for its neighbours' records).
- **rpf**: ``N |ball| m t_col + N n_theta t_normal + N 2n |ball| t_state + a0 + a1 N +
  (|ball| - 1) c_stream + c_relay (measurements received)``; communication
  ``min(hops, diameter)`` rounds (hops default = diameter), each a handshake +
  ``Neighbor_alltoallv`` of packed measurements (``(4 + m p) 8`` B each) counted from the
  relay plans of the actual graph (:class:`mcdpf.rpf.RelayPlan` at every node; that they
  deliver every measurement within ``hops`` exactly once is checked at K = 16). With the
  default every node holds every node's data: the compute
  grows like K, it cannot weak-scale; bounded hops (1, 2) are reported beside it.
- **dekf**: ``fixed + (P += qI) + (1 + d_k)(linearise + EKF update)``, the maximum over the
  closed neighbourhood; communication a handshake + ``Neighbor_allgatherv`` of the
  measurement (``2 + 2n + m p`` doubles) + ``Neighbor_allgather`` of the estimate
  (``n_theta`` doubles).
- **An exchange** (``c`` sequential MPI calls): software ``s_op`` (measured locally: wrapper
  time minus its modelled local transport) ``+ (d_k - 1) c_nbr c`` plus, per call, the
  transport ``max(shm, net)``: ``shm = alpha_shm + bytes to on-host neighbours / beta_shm``
  (this machine's MPI, alpha_shm = fitted latency minus the per-call cost), ``net =
  alpha_net + bytes through the host's NIC / beta_net`` (documented figures). Ranks are
  placed in blocks of ``ranks_per_host`` consecutive ranks (default 64, one NIC per host,
  full duplex: the NIC term uses the larger of the host's off-host bytes out and in); with
  64 ranks per host K <= 64 never leaves the host. ``ranks_per_host = 1`` is reported as
  a sensitivity case.
- **Jitter**: ``sigma e(d_k + 1)`` per step, sigma the robust (MAD) standard deviation of
  this machine's pf step CPU time: neighbour-only coupling makes a node wait for the
  slowest of its closed neighbourhood, not of all K (a global barrier would give about
  ``sigma sqrt(2 ln K)``, recorded for comparison).

Assumptions not modelled: network congestion beyond the NIC (full bisection), shared-memory
bandwidth contention between the ranks of a host, MPI eager/rendezvous switches (Hockney
``alpha + bytes / beta`` throughout), asynchronous progress (MPICH progresses only inside
calls: no overlap, as measured in docs/performance.md), a different CPU on the cluster (all compute
constants are this machine's).

Validation: the model with this machine's MPI constants (both ranks on one host) against
real learners (as in ``benchmarks/step.py``) at K = 1 (one process) and K = 2
(``mpiexec -n 2``, a 2-node ring), printed as predicted, measured and measured/predicted.
"""

import argparse

# common pins the BLAS and numba threads before numpy loads
# isort: off
from common import RESULTS
from cluster.measure import measure, mpi_constants_worker, validation_worker
from cluster.report import report
# isort: on


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(RESULTS / "cluster_model.json"),
                        help="where the JSON goes")
    parser.add_argument("--plot", default=str(RESULTS / "cluster_model.png"),
                        help="where the figure goes (empty: none)")
    parser.add_argument("--quick", action="store_true",
                        help="few repeats, K <= 64, small MPI sizes (smoke test)")
    parser.add_argument("--mpi-constants-worker", metavar="FILE",
                        help="under mpiexec -n 2: measure the MPI constants into FILE (JSON); "
                             "started by the script itself")
    parser.add_argument("--validation-worker", metavar="FILE",
                        help="under mpiexec -n 2: time real dpf, rpf, dekf steps on a 2-node "
                             "ring into FILE (JSON); started by the script itself")
    args = parser.parse_args()
    if args.mpi_constants_worker:
        mpi_constants_worker(args.mpi_constants_worker, args.quick)
    elif args.validation_worker:
        validation_worker(args.validation_worker, args.quick)
    else:
        report(measure(args.quick), args.quick, args.json, args.plot)


if __name__ == "__main__":
    main()
