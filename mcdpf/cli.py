"""Command line: ``mcdpf train | compare | supervise | report | export | warmup | topology``.

The entry point is the only place that touches ``MPI.COMM_WORLD`` (``supervise`` runs
outside MPI: it launches ``mpiexec ... mcdpf train`` and resumes it after failures,
:mod:`mcdpf.supervise`). Error handling:

- a bad input (:class:`~mcdpf.errors.InputError`) on any rank: every rank learns it in a
  set-up collective, the first rank prints one line ``mcdpf: error: ...`` and every rank
  exits with code 2;
- any other exception is a bug: the failing rank prints its traceback, naming the rank,
  and aborts the whole MPI job (``MPI_Abort``), so no rank is left waiting;
- SIGINT, SIGTERM, SIGHUP or SIGUSR1 to ``train`` or ``compare``: every rank stops at one
  agreed step, saves, and the command exits ``128 + signal`` (:mod:`mcdpf.shutdown`).

The commands that run outside MPI (``report``, ``export``, ``topology``) also turn an
unwritable output path and a closed output pipe (``mcdpf report RUN | head``) into one
line and exit 2. ``mcdpf`` without a command prints its usage (exit 2).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import sys
import time
import traceback
from pathlib import Path

from . import __version__
from .errors import (
    EXIT_INPUT_ERROR,
    EXIT_STORAGE_ERROR,
    InputError,
    LockstepError,
    StorageError,
    print_error,
)
from .markers import launcher_rank
from .registry import ALGORITHMS, TOPOLOGIES, WALKS


class _Parser(argparse.ArgumentParser):
    """Argument parser whose errors are one-line :class:`InputError`s."""

    def error(self, message):
        raise InputError(f"{self.prog}: {message}")



def build_parser() -> argparse.ArgumentParser:
    """The ``mcdpf`` argument parser."""
    parser = _Parser(prog="mcdpf", description="Decentralized online training of LSTM "
                     "regressors by the Markov Chain Distributed Particle Filter.")
    parser.add_argument("--version", action="version", version=f"mcdpf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train under mpiexec: one rank per node "
                                "(algorithms: " + "; ".join(
                                    f"{name}: {ALGORITHMS.entry(name).traits.summary}"
                                    for name in ALGORITHMS) + ")")
    train.add_argument("config", nargs="?", help="configuration file (TOML); optional with "
                       "--resume (the run directory keeps its configuration)")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a configuration key (VALUE is a TOML value; a bare "
                       "word is a string); repeatable")
    train.add_argument("--out", help="run directory (default: run.out, else runs/<config>)")
    train.add_argument("--force", action="store_true",
                       help="overwrite an existing run in the output directory")
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue RUN_DIR from the newest checkpoint every rank has "
                       "(its kept configuration; a CONFIG or --set given must agree)")
    train.add_argument("--without", metavar="NODE[,NODE...]",
                       help="with --resume: continue on the other nodes (start K - |nodes "
                       "left out so far| ranks); the nodes leave at the resumed step as "
                       "with faults.drop")
    train.add_argument("--cause", default="manual",
                       help="why this resume happens, recorded in resumes.json")
    train.add_argument("--markers", metavar="DIR",
                       help="keep per-rank liveness markers in DIR (mcdpf supervise)")
    train.add_argument("--quiet", action="store_true", help="no progress line")

    supervise = commands.add_parser(
        "supervise", help="not under mpiexec: run `mpiexec -n K mcdpf train` and, when "
        "the job fails, resume it on the surviving nodes (or all of them when none was "
        "lost); restarts are logged in RUN_DIR/restarts.json")
    supervise.add_argument("config", nargs="?", help="configuration file (TOML); optional "
                           "with --resume")
    supervise.add_argument("-n", dest="nodes", type=int, required=True, metavar="K",
                           help="nodes of the network: ranks of the first job")
    supervise.add_argument("--set", action="append", default=[],
                           metavar="SECTION.KEY=VALUE",
                           help="override a configuration key; repeatable")
    supervise.add_argument("--out", help="run directory (default: run.out, else "
                           "runs/<config>)")
    supervise.add_argument("--force", action="store_true",
                           help="overwrite an existing run in the output directory")
    supervise.add_argument("--resume", metavar="RUN_DIR",
                           help="start by resuming RUN_DIR instead of a new run")
    supervise.add_argument("--retries", type=int, default=3, metavar="R",
                           help="restarts allowed before giving up (default: 3)")
    supervise.add_argument("--mpiexec", metavar="PATH",
                           help="launcher (default: the mpiexec beside this Python, "
                           "else the one on PATH)")
    supervise.add_argument("--quiet", action="store_true", help="no progress line")

    compare = commands.add_parser("compare", help="under mpiexec: run several algorithms on "
                                  "one configuration; table and running-MSE figure")
    compare.add_argument("config", help="configuration file (TOML)")
    compare.add_argument("--algorithms", default=",".join(ALGORITHMS),
                         help="comma-separated algorithms (default: all: "
                         f"{', '.join(ALGORITHMS)})")
    compare.add_argument("--seeds", help="comma-separated seeds (default: the "
                         "configuration's run.seed)")
    compare.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                         help="override a configuration key; repeatable")
    compare.add_argument("--out", required=True, help="directory for all runs and the result")
    compare.add_argument("--title", default="", help="title of the figure")
    compare.add_argument("--force", action="store_true", help="overwrite existing runs")

    report = commands.add_parser("report", help="summarise a finished run")
    report.add_argument("run_dir", help="run directory with node-*.h5 files")
    report.add_argument("--json", action="store_true", help="print one JSON object")
    report.add_argument("--plot", metavar="FILE.png", help="write running-MSE curves")

    export = commands.add_parser("export", help="write a run's targets and predictions, in "
                                 "the data's original and scaled units, to a CSV file")
    export.add_argument("run_dir", help="run directory with node-*.h5 files")
    export.add_argument("--csv", required=True, metavar="FILE.csv",
                        help="one row per node and step: node, step, target, prediction, "
                        "error, squared_error (original units), the same *_scaled, skipped")

    warmup = commands.add_parser("warmup", help="compile the kernels a run will need, once "
                                 "per machine (else the first run does it; not under "
                                 "mpiexec)")
    warmup.add_argument("config", nargs="?", help="configuration file (TOML); default: the "
                        "kernels of every model dtype")
    warmup.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a configuration key; repeatable")

    topology = commands.add_parser("topology", help="validate and describe a topology")
    topology.add_argument("topology", help="topology file, or a built-in name ("
                          f"{', '.join(TOPOLOGIES)})")
    topology.add_argument("--nodes", type=int, help="node count of a built-in topology")
    topology.add_argument("--walk", choices=WALKS.names())
    topology.add_argument("--seed", type=int, default=0, help="seed of the random topology")
    topology.add_argument("--json", action="store_true", help="print one JSON object")
    topology.add_argument("--write", metavar="FILE.toml",
                          help="also write the topology (with its transition) to a file")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mcdpf`` command."""
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        if launcher_rank() == 0:
            print(parser.format_help().rstrip(), file=sys.stderr, flush=True)
        return EXIT_INPUT_ERROR
    try:
        args = parser.parse_args(argv)
    except InputError as error:
        if launcher_rank() == 0:
            print_error(str(error))
        return EXIT_INPUT_ERROR
    if args.command in ("train", "supervise"):
        try:
            check_run_arguments(args)
        except InputError as error:
            if launcher_rank() == 0:
                print_error(str(error))
            return EXIT_INPUT_ERROR
    if args.command in ("train", "compare"):
        marker = None
        if args.command == "train" and args.markers:
            from .markers import FINISHED, Marker, rank_file

            rank = launcher_rank()
            marker = Marker(rank_file(args.markers, rank), rank=rank, pid=os.getpid())
        code = mpi_command(args, marker)
        if marker is not None:
            marker.set(FINISHED, exit_code=code)
        return code
    try:
        if args.command == "supervise":
            from .supervise import supervise

            return supervise(args)
        command = {"report": report_command, "export": export_command,
                   "warmup": warmup_cli, "topology": topology_command}[args.command]
        code = command(args)
        sys.stdout.flush()  # a closed pipe fails here, not at exit
        return code
    except InputError as error:
        print_error(str(error))
        return EXIT_INPUT_ERROR
    except BrokenPipeError:
        return _broken_pipe()


def _broken_pipe() -> int:
    """The reader of standard output left (``| head``): one line, exit 2.

    Standard output is pointed at ``/dev/null`` so that the interpreter's final flush
    does not fail a second time.
    """
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    print_error("standard output closed before the output was written (broken pipe)")
    return EXIT_INPUT_ERROR


def _writing(path, write):
    """Return ``write()``, which writes ``path``; an :class:`OSError` becomes one line."""
    try:
        return write()
    except OSError as error:
        raise InputError(f"{path}: cannot write ({error.strerror or error})") from None


def check_run_arguments(args) -> None:
    """The run-directory arguments of ``train`` and ``supervise``, checked once."""
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise InputError(f"{args.command}: --resume RUN_DIR continues in RUN_DIR; drop --out")
    if args.config is None and not args.resume:
        raise InputError(f"{args.command}: give a CONFIG (or --resume RUN_DIR)")
    if getattr(args, "without", None) is not None and not args.resume:
        raise InputError("--without continues a run: give --resume RUN_DIR")


def mpi_command(args, marker=None) -> int:
    """``mcdpf train`` and ``compare``: every rank runs this; abort on an unexpected error.

    ``marker`` (a :class:`~mcdpf.markers.Marker`) records an abort as ``error``.
    """
    started = time.perf_counter()
    from mpi4py import MPI

    from .faults import InjectedFault
    from .shutdown import SignalWatch

    world = MPI.COMM_WORLD
    try:
        with SignalWatch(world) as watch:
            if args.command == "compare":
                return _compare(world, args, watch)
            return _train(world, args, started, watch)
    except InjectedFault as fault:
        message = f"mcdpf: rank {world.Get_rank()}: {fault}; aborting the job"
    except StorageError as problem:
        return _storage_abort(world, problem, marker)
    except Exception:
        message = (f"mcdpf: rank {world.Get_rank()}: internal error, aborting the job\n"
                   f"{traceback.format_exc()}")
    print(message, file=sys.stderr, flush=True)
    if marker is not None:
        from .markers import ERROR

        marker.set(ERROR, message=message.splitlines()[0])
    from .comm import abort

    abort(world, 1)
    return 1


def _agreed(comm, work):
    """``work()`` on every rank (:func:`~mcdpf.comm.agreed`); ``None`` if it failed.

    A failure (:class:`InputError` on any rank) is printed once, by the first rank.
    """
    from .comm import agreed

    try:
        return agreed(comm, work)
    except InputError as problem:
        if comm.Get_rank() == 0:
            print_error(str(problem))
        return None


def _storage_abort(world, problem, marker) -> int:
    """A file could not be written: one line, then every rank ends (:data:`EXIT_STORAGE_ERROR`).

    The ranks are mid-run and cannot agree, so the job is aborted; the line says what
    stays: the files already under their final names, the previous checkpoints included.
    Of several ranks that fail at once on one machine, the first to lock the run
    directory prints the line; the others wait for it to abort the job.
    """
    message = (f"mcdpf: error: rank {world.Get_rank()}: {problem}; stopping the job (exit "
               f"{EXIT_STORAGE_ERROR}); files already written, earlier checkpoints included, "
               "are intact")
    if _first_to_report(Path(problem.path)):
        print(message, file=sys.stderr, flush=True)
    else:
        time.sleep(REPORT_GRACE_SECONDS)  # the first reporter aborts the job meanwhile
    if marker is not None:
        from .markers import ERROR

        marker.set(ERROR, message=message, exit_code=EXIT_STORAGE_ERROR)
    from .comm import abort

    abort(world, EXIT_STORAGE_ERROR)
    return EXIT_STORAGE_ERROR


REPORT_GRACE_SECONDS = 2.0


def _first_to_report(path: Path) -> bool:
    """Whether this process is the first to report a storage failure in ``path``'s run.

    An exclusive, non-blocking lock on the run directory (``path``'s directory, or its
    parent for ``checkpoints/``), held until the process ends: no write is needed, so it
    works on a full disk. A directory that cannot be opened (vanished): report anyway.
    """
    directory = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(handle)
        return False
    return True  # the descriptor stays open: the lock lasts until the process ends


def _agreed_config(comm, args, extra_check=None):
    """Load the configuration on every rank; ``None`` (error printed once) if any failed."""
    from .resume import command_config

    def load():
        config = command_config(args.config, args.set, getattr(args, "resume", None))
        if extra_check is not None:
            extra_check()
        return config

    return _agreed(comm, load)


def _compare(comm, args, watch) -> int:
    from .compare import (
        check_variants,
        comparison_table,
        comparison_variants,
        describe_run,
        parse_list,
        run_comparison,
        write_comparison,
    )
    from .config import load_config

    def load_variants():
        config = load_config(args.config, args.set)
        algorithms = parse_list(args.algorithms)
        unknown = [a for a in algorithms if a not in ALGORITHMS]
        if unknown or not algorithms:
            raise InputError(f"--algorithms {args.algorithms}: unknown algorithm "
                             f"'{unknown[0] if unknown else ''}'; choose from "
                             f"{', '.join(ALGORITHMS)}")
        seeds = [config.run.seed]
        if args.seeds is not None:
            try:
                seeds = parse_list(args.seeds, int)
            except ValueError:
                raise InputError(f"--seeds {args.seeds}: expected integers like 1,2,3") \
                    from None
            if not seeds or min(seeds) < 0:
                raise InputError(f"--seeds {args.seeds}: expected non-negative integers")
        variants = comparison_variants(lambda extra: load_config(args.config,
                                                                 [*args.set, *extra]),
                                       algorithms, seeds)
        return algorithms, seeds, variants

    loaded = _agreed(comm, load_variants)
    if loaded is None:
        return EXIT_INPUT_ERROR
    algorithms, seeds, variants = loaded
    rank = comm.Get_rank()
    try:
        check_variants(comm, variants)
    except InputError as problem:
        if rank == 0:
            print_error(str(problem))
        return EXIT_INPUT_ERROR

    def report(algorithm, seed, result):
        if rank == 0:
            print(describe_run(algorithm, seed, result), file=sys.stderr, flush=True)

    try:
        stopped = run_comparison(comm, variants, Path(args.out), args.force, report, watch)
    except InputError as problem:
        if rank == 0:
            print_error(str(problem))
        return EXIT_INPUT_ERROR
    if stopped is not None:
        return _stopped(comm, stopped, watch, "the comparison was not written; the runs "
                        f"listed above are complete in {args.out}")
    if rank == 0:
        comparison = write_comparison(Path(args.out), algorithms, seeds, args.title)
        print(comparison_table(comparison))
        print(f"\nwritten: {Path(args.out) / 'comparison.md'}, comparison.json, "
              "comparison.png")
    return 0


def _train(comm, args, started: float, watch) -> int:
    from .driver import train
    from .elastic import parse_nodes

    rank = comm.Get_rank()
    without = []

    def check_without():
        if args.without is not None:
            without.extend(parse_nodes(args.without))

    config = _agreed_config(comm, args, check_without)
    if config is None:
        return EXIT_INPUT_ERROR
    out_dir = args.resume or args.out
    try:
        result = train(comm, config, Path(out_dir) if out_dir else None, force=args.force,
                       resume=bool(args.resume), without=tuple(without), cause=args.cause,
                       progress=not args.quiet, started=started, watch=watch)
    except InputError as problem:
        if isinstance(problem, LockstepError) and watch.signal is not None:
            raise  # ranks disagree on where to stop: abort, never wait
        if rank == 0:
            print_error(str(problem))
        return EXIT_INPUT_ERROR
    _print_final_summary(comm, config, result)
    stop = result["stop"]
    if stop is None or stop.finished:
        return _stopped(comm, stop, watch, f"all {result['attributes']['steps']} steps are "
                        f"done; outputs in {result['out_dir']}")
    # The run directory keeps its configuration: --resume RUN_DIR needs nothing else.
    resume = ["mpiexec", "-n", str(comm.Get_size()), "mcdpf", "train", "--resume",
              str(result["out_dir"])]
    return _stopped(comm, stop, watch, f"every node saved a checkpoint and its outputs so far "
                    f"(valid until step {stop.step} of {stop.steps}) in {result['out_dir']}; "
                    f"resume with: {shlex.join(resume)}")


def _stopped(comm, stop, watch, what: str) -> int:
    """Exit code 0, or ``128 + signal`` after a signal (rank 0 says ``what``)."""
    number = stop.signal if stop is not None else watch.signal
    if number is None:
        return 0
    from .shutdown import exit_code, signal_name

    if comm.Get_rank() == 0:
        step = f" at step {stop.step}" if stop is not None and not stop.finished else ""
        print(f"mcdpf: stopped by {signal_name(number)}{step}: {what}", file=sys.stderr,
              flush=True)
    if stop is not None:
        comm.Barrier()  # shutdown: no rank's early exit (a launcher may end the rest) cuts it
    return exit_code(number)


def _print_final_summary(comm, config, result) -> None:
    """Shutdown collective: rank 0 prints the network MSE and the run directory."""
    import numpy as np

    from .comm import gather_to_first
    from .results import finite_mean

    errors = result["datasets"]["squared_error"]
    mse = finite_mean(errors)
    attributes = result["attributes"]
    gathered = gather_to_first(comm, np.array([mse, attributes["loop_seconds"]]))
    if gathered is not None:
        mse = finite_mean(gathered[:, 0])
        seconds = float(gathered[:, 1].max())
        steps = attributes["valid_until"]  # all of them unless a signal stopped the run
        nodes = attributes["n_nodes"]
        ranks = comm.Get_size()
        where = f"{nodes} nodes" if ranks == nodes else f"{ranks} of {nodes} nodes"
        print(f"mcdpf: {config.run.algorithm} on {where}: "
              f"{steps} steps in {seconds:.2f} s ({steps / max(seconds, 1e-9):.1f} steps/s), "
              f"network MSE {mse:.6g}; outputs in {result['out_dir']}", file=sys.stderr,
              flush=True)


def report_command(args) -> int:
    """``mcdpf report``."""
    from .report import format_report, plot_running_mse, summarize, to_json

    summary = summarize(args.run_dir)
    if args.plot:
        _writing(args.plot, lambda: plot_running_mse(args.run_dir, args.plot))
    if args.json:
        print(to_json(summary))
    else:
        print(format_report(summary))
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0


def export_command(args) -> int:
    """``mcdpf export``."""
    from .results import export_csv

    run = _writing(args.csv, lambda: export_csv(args.run_dir, args.csv))
    units = ("the data's original units (columns *_scaled: as the learner saw them)"
             if run.units != "unknown" else "the learner's units only (the run predates the "
             "scaling record: the original-unit columns are empty)")
    print(f"{args.csv}: {run.n_nodes * run.steps} rows ({run.n_nodes} nodes x {run.steps} "
          f"steps), targets and predictions in {units}", file=sys.stderr)
    return 0


def warmup_cli(args) -> int:
    """``mcdpf warmup [CONFIG]``: compile (or load) the kernels; one line when done."""
    from .config import load_config
    from .kernels import cache_directory
    from .warmup import warmup_command

    if args.set and not args.config:
        raise InputError("warmup: --set needs a CONFIG")
    config = load_config(args.config, args.set) if args.config else None
    first = launcher_rank() == 0
    seconds = warmup_command(config, announce=first)
    if first:
        print(f"mcdpf: kernels ready in {seconds:.1f} s (cache: {cache_directory()})",
              file=sys.stderr, flush=True)
    return 0


def topology_command(args) -> int:
    """``mcdpf topology``."""
    from .topology import resolve_topology_argument

    topology = resolve_topology_argument(args.topology, args.nodes, args.walk, args.seed)
    summary = topology.describe()
    if args.write:
        _writing(args.write, lambda: Path(args.write).write_text(topology.to_toml(),
                                                                 encoding="utf-8"))
    if args.json:
        print(json.dumps(summary))
        return 0
    pi = ", ".join(f"{v:.4g}" for v in summary["stationary_distribution"])
    print(f"topology {summary['source']}: {summary['nodes']} nodes, {summary['edges']} edges, "
          f"{summary['walk']} walk")
    print(f"  degrees: {summary['degrees']} ({'regular' if summary['regular'] else 'irregular'})")
    print(f"  stationary distribution pi: [{pi}]")
    print(f"  SLEM: {summary['slem']:.6f}   period: {summary['period']} "
          f"({'PERIODIC' if summary['periodic'] else 'aperiodic'})   diameter: "
          f"{summary['diameter']}")
    for warning in topology.warnings():
        print(f"  warning: {warning}")
    if args.write:
        print(f"  written to {args.write}")
    return 0
