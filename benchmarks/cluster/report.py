"""The cluster model's report: tables, predictions for every cluster, JSON and figure.

:func:`report` takes :func:`cluster.measure.measure`'s measurements, fits the model's
constants (:func:`cluster.model.local_network`), predicts every scenario, interconnect,
graph and K (:func:`cluster.model.predict`), validates the model against this machine's
K = 1 and K = 2 runs (:func:`validation_rows`), prints it all and writes the JSON.
"""

import os
import time
from dataclasses import asdict

import numpy as np
from common import table, write_json

from .measure import mpi_library
from .model import (
    ASSUMPTIONS,
    INTERCONNECTS,
    KS,
    QUICK_KS,
    RANKS_PER_HOST,
    SCENARIOS,
    TOPOLOGIES,
    ClusterModel,
    Network,
    graph,
    local_network,
    predict,
)


def prediction_table(rows, ks) -> str:
    cells = []
    for row in rows:
        cell = {"alg": row["algorithm"], "topology": row["topology"]}
        for k in ks:
            r = row["by_K"][str(k)]
            cell[str(k)] = f"{r['step'] * 1e3:.3g} ({r['efficiency']:.2g})"
        cells.append(cell)
    return table(cells, [("alg", "algorithm", ""), ("topology", "topology", "")]
                 + [(str(k), f"K={k}", "") for k in ks])



def validation_rows(constants, local, measured1, measured2) -> list[dict]:
    rows = []
    for sc in SCENARIOS:
        network = Network("this machine", float("nan"), float("nan"),
                          local["shm"]["latency"], local["shm"]["bandwidth"],
                          local["per_neighbour"], ranks_per_host=2)
        model = ClusterModel(sc, constants[sc.key], local["software"][sc.key], network)
        for k, measured in ((1, measured1), (2, measured2)):
            g = graph("ring", k, sc.walk)
            for algorithm in ("dpf", "rpf", "dekf"):
                predicted = (model.dpf(g) if algorithm == "dpf" else
                             model.rpf(g, None) if algorithm == "rpf" else model.dekf(g))
                times = np.array(measured[f"{sc.key}/{algorithm}"])
                row = {"scenario": sc.key, "algorithm": algorithm, "K": k,
                       "predicted_ms": predicted["step"] * 1e3,
                       "predicted_comm_ms": predicted["comm"] * 1e3,
                       "measured_median_ms": float(np.median(times)) * 1e3,
                       "measured_p10_ms": float(np.percentile(times, 10)) * 1e3,
                       "ratio": float(np.median(times)) / predicted["step"],
                       "ratio_p10": float(np.percentile(times, 10)) / predicted["step"],
                       "corun_ms": float("nan"), "contention": float("nan"),
                       "ratio_corrected": float("nan")}
                if k == 2:
                    corun = np.median(measured[f"{sc.key}/{algorithm}/corun"])
                    solo = np.median(measured1[f"{sc.key}/{algorithm}/control"])
                    row["corun_ms"] = float(corun) * 1e3
                    row["contention"] = float(corun / solo)
                    corrected = (predicted["step"] - predicted["comm"]) * row["contention"] \
                        + predicted["comm"]
                    row["predicted_corrected_ms"] = corrected * 1e3
                    row["ratio_corrected"] = float(np.median(times)) / corrected
                rows.append(row)
    return rows



def plot(path, predictions, ks):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(SCENARIOS), figsize=(11, 4), sharey=True)
    for axis, sc in zip(axes, SCENARIOS, strict=True):
        rows = predictions[sc.key]["InfiniBand HDR"]
        for row in rows:
            if row["topology"] != "torus":
                continue
            axis.plot(ks, [row["by_K"][str(k)]["efficiency"] for k in ks], marker="o",
                      label=row["algorithm"])
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("nodes K (one rank per core, 64 per host)")
        axis.set_title(f"{sc.label}\n2-D torus, InfiniBand HDR", fontsize=9)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("weak-scaling efficiency T(1)/T(K)")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"written: {path}")


def report(measured: dict, quick: bool, json_path, plot_path) -> dict:
    """Print every table, predict every cluster, write the JSON (and the figure)."""
    ks = QUICK_KS if quick else KS
    load, constants, rounds = measured["load_average"], measured["constants"], measured["rounds"]
    mpi, measured1, measured2 = measured["mpi"], measured["K1"], measured["K2"]
    started = measured["started"]
    local = local_network(mpi)
    print(f"Constants measured here (CPU time of one thread, min over repeats; load average "
          f"{load:.1f} on {os.cpu_count()} cores)")
    rows = []
    for sc in SCENARIOS:
        c = constants[sc.key]
        rows.append({"scenario": sc.key, "t_col": c["t_col"] * 1e9,
                     "t_col_med": c["spread"]["t_col"]["median"] * 1e9,
                     "t_normal": c["t_normal"] * 1e9, "t_state": c["t_state"] * 1e9,
                     "a0": c["pf_a0"] * 1e6, "a1": c["pf_a1"] * 1e9,
                     "w0": c["walk_w0"] * 1e6, "w1": c["walk_w1"] * 1e9,
                     "wmove": c["walk_w_move"] * 1e9, "stream": c["c_stream"] * 1e6,
                     "relay": c["c_relay"] * 1e6, "sigma": c["sigma_step"] * 1e6})
    print(table(rows, [("scenario", "size", ""), ("t_col", "t_col ns", ".1f"),
                       ("t_col_med", "(median)", ".1f"), ("t_normal", "t_normal ns", ".2f"),
                       ("t_state", "t_state ns", ".2f"), ("a0", "pf a0 us", ".1f"),
                       ("a1", "pf a1 ns/N", ".0f"), ("w0", "walk w0 us", ".1f"),
                       ("w1", "w1 ns/N", ".0f"), ("wmove", "w_move ns", ".0f"),
                       ("stream", "stream us", ".1f"), ("relay", "relay us", ".2f"),
                       ("sigma", "sigma us", ".1f")]))
    rows = [{"scenario": sc.key, "lin": constants[sc.key]["dekf_linearise"] * 1e6,
             "grad": constants[sc.key]["kernel_gradient"] * 1e6,
             "kupd": constants[sc.key]["kernel_gaussian_update"] * 1e6,
             "upd": constants[sc.key]["dekf_update"] * 1e6,
             "diag": constants[sc.key]["dekf_time_update"] * 1e6,
             "fixed": constants[sc.key]["dekf_fixed"] * 1e6,
             "step": constants[sc.key]["dekf_k1_step"] * 1e6} for sc in SCENARIOS]
    print("\ndekf pieces (us): linearise = lstm_prediction_gradient through the learner, "
          "update = gaussian_update on (1, n_theta, n_theta)")
    print(table(rows, [("scenario", "size", ""), ("lin", "linearise", ".1f"),
                       ("grad", "(gradient kernel)", ".1f"), ("upd", "EKF update", ".1f"),
                       ("kupd", "(gaussian_update)", ".1f"), ("diag", "P += qI", ".1f"),
                       ("fixed", "rest", ".1f"), ("step", "K=1 step", ".1f")]))
    print(f"\nMPI here ({mpi_library()}), 2 ranks on one host: ping-pong "
          f"{local['ping_pong']['latency'] * 1e6:.2f} us + bytes / "
          f"{local['ping_pong']['bandwidth'] / 1e9:.2f} GB/s; Neighbor_alltoallv "
          f"{local['neighbor_alltoallv']['latency'] * 1e6:.2f} us + bytes / "
          f"{local['neighbor_alltoallv']['bandwidth'] / 1e9:.2f} GB/s; per call "
          f"{local['call'] * 1e6:.2f} us; per extra neighbour "
          f"{local['per_neighbour'] * 1e6:.2f} us")
    print(table([{"bytes": p["bytes"], "pp": p["seconds"] * 1e6, "nb": n["seconds"] * 1e6}
                 for p, n in zip(mpi["ping_pong"], mpi["neighbor_alltoallv"], strict=True)],
                [("bytes", "bytes", "d"), ("pp", "ping-pong one-way us", ".2f"),
                 ("nb", "Neighbor_alltoallv us", ".2f")]))
    rows = [{"scenario": key, "op": op, "wrapper": v["wrapper"] * 1e6, "bare": v["bare"] * 1e6,
             "software": v["software"] * 1e6}
            for key, ops in local["software"].items() for op, v in ops.items()]
    print("\nmcdpf's exchanges at K = 2 sizes (us): wrapper, the bare MPI calls, software "
          "= wrapper - modelled local transport")
    print(table(rows, [("scenario", "size", ""), ("op", "exchange", ""),
                       ("wrapper", "wrapper", ".1f"), ("bare", "bare MPI", ".1f"),
                       ("software", "software", ".1f")]))

    relay_checked = {f"{name} hops={hops}": graph(name, 16, "lazy").relay_complete(hops)
                     for name in TOPOLOGIES for hops in (1, 2, graph(name, 16, "lazy").diameter)}
    print("\nmcdpf.rpf.RelayPlan delivers every measurement within hops exactly once at "
          f"K = 16: {all(relay_checked.values())}")

    predictions, placement = {}, []
    for sc in SCENARIOS:
        predictions[sc.key] = {}
        for interconnect in INTERCONNECTS:
            network = Network(interconnect.name, interconnect.latency, interconnect.bandwidth,
                              local["shm"]["latency"], local["shm"]["bandwidth"],
                              local["per_neighbour"], RANKS_PER_HOST)
            model = ClusterModel(sc, constants[sc.key], local["software"][sc.key], network)
            rows = predict(model, ks)
            predictions[sc.key][interconnect.name] = rows
            print(f"\nPredicted step ms (weak-scaling efficiency T(1)/T(K)): {sc.label}, "
                  f"{interconnect.name} ({interconnect.latency * 1e6:g} us, "
                  f"{interconnect.bandwidth / 1e9:g} GB/s), {RANKS_PER_HOST} ranks per host")
            print(prediction_table(rows, ks))
        ib = INTERCONNECTS[0]
        for per_host in (1, RANKS_PER_HOST):
            network = Network(ib.name, ib.latency, ib.bandwidth, local["shm"]["latency"],
                              local["shm"]["bandwidth"], local["per_neighbour"], per_host)
            model = ClusterModel(sc, constants[sc.key], local["software"][sc.key], network)
            for row in predict(model, (ks[0], ks[-1])):
                if row["topology"] == "ring":
                    continue
                last = row["by_K"][str(ks[-1])]
                placement.append({"scenario": sc.key, "ranks_per_host": per_host,
                                  "algorithm": row["algorithm"], "topology": row["topology"],
                                  "step_ms": last["step"] * 1e3, "comm_ms": last["comm"] * 1e3,
                                  "efficiency": last["efficiency"]})
    print(f"\nPlacement sensitivity at K = {ks[-1]}, InfiniBand HDR: ranks per host 1 "
          f"(every neighbour remote, a NIC each) vs {RANKS_PER_HOST} (one NIC shared)")
    print(table(placement, [("scenario", "size", ""), ("ranks_per_host", "ranks/host", "d"),
                            ("algorithm", "algorithm", ""), ("topology", "topology", ""),
                            ("step_ms", "step ms", ".3g"), ("comm_ms", "comm ms", ".3g"),
                            ("efficiency", "efficiency", ".2g")]))

    validation = validation_rows(constants, local, measured1, measured2)
    print(f"\nValidation on this machine (model with this machine's MPI; measured: real "
          f"learners, wall time, K=2 under mpiexec -n 2, the round with the lowest median of "
          f"{len(rounds)}; load averages {[round(r['load_average'], 1) for r in rounds]})")
    print(table(validation, [("scenario", "size", ""), ("algorithm", "alg", ""), ("K", "K", "d"),
                             ("predicted_ms", "predicted ms", ".3f"),
                             ("predicted_comm_ms", "of which comm", ".3f"),
                             ("measured_median_ms", "measured median", ".3f"),
                             ("measured_p10_ms", "measured p10", ".3f"),
                             ("ratio", "median/pred", ".2f"), ("ratio_p10", "p10/pred", ".2f"),
                             ("contention", "co-run/solo", ".2f"),
                             ("ratio_corrected", "median/(pred x contention)", ".2f")]))
    print("  co-run/solo: the K = 2 step's local work without MPI (dpf on the loopback, rpf "
          "and dekf at K = 1) on both ranks at once under mpiexec -n 2, over the same work "
          "alone in one process (medians): what sharing this machine's 2 cores and memory "
          "does to two ranks side by side; the last column scales the predicted compute by "
          "it")

    result = {
        "quick": quick,
        "load_average": load,
        "seconds": time.perf_counter() - started,
        "ks": list(ks),
        "topologies": list(TOPOLOGIES),
        "ranks_per_host": RANKS_PER_HOST,
        "scenarios": {sc.key: {**asdict(sc), "n_theta": sc.n_theta,
                               "record_bytes": sc.record_bytes, "relay_bytes": sc.relay_bytes,
                               "dekf_bytes": [sc.dekf_measurement_bytes,
                                              sc.dekf_estimate_bytes]} for sc in SCENARIOS},
        "interconnects": [asdict(i) for i in INTERCONNECTS],
        "assumptions": ASSUMPTIONS,
        "constants": constants,
        "mpi_measured": mpi,
        "mpi_local_model": local,
        "relay_plan_check_k16": all(relay_checked.values()),
        "predictions": predictions,
        "placement_sensitivity": placement,
        "validation": validation,
        "validation_raw_seconds": {"K1": measured1, "K2": measured2},
        "rounds": [{"load_average": r["load_average"],
                    "medians_K1": {k: float(np.median(v)) for k, v in r["K1"].items()},
                    "medians_K2": {k: float(np.median(v)) for k, v in r["K2"].items()}}
                   for r in rounds],
    }
    write_json(json_path, result)
    if plot_path:
        plot(plot_path, predictions, ks)
    return result
