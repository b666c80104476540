"""The BLAS under numpy's linear algebra: one thread while a node trains.

threadpoolctl is imported only here. The numpy linear algebra of a run (the lowrank
form's Woodbury solves and thin SVDs, Cholesky factors of perturbations, the exact
Kalman reference) works on thin ``n_theta x (r + 1)`` or small square matrices, where BLAS
threads gain nothing; mcdpf's parallelism is its ranks and numba's threads
(``run.threads``). Left alone, every rank starts a pool of BLAS threads, one per core,
and with several ranks on a machine their spinning workers take the cores from the
ranks: dpf with low-rank Gaussian particles at n = 64 on 2 ranks of a 2-core machine ran
5.6x slower (13.8 s against 2.5 s for 200 steps). Environment variables
(``OPENBLAS_NUM_THREADS``) act only before numpy loads, which an importer of
:mod:`mcdpf` may already have done; threadpoolctl (the joblib project's, used by
scikit-learn) sets the pool of whichever BLAS numpy loaded (OpenBLAS, MKL, BLIS) at run
time and restores it afterwards, so a Python session keeps its own setting outside a run.
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits


def one_blas_thread():
    """A context in which numpy's BLAS runs on one thread (restored on leaving it)."""
    return threadpool_limits(limits=1, user_api="blas")
