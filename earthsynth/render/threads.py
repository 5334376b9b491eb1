"""numba's thread pool next to torch's: pick the 'workqueue' layer before anyone starts the default one.

With numba's default OpenMP layer the pool shares torch's libgomp, whose idle workers spin-wait between the
small, frequent numba calls of an optimisation loop (mesh renders in the geometry / texture stages, splat
compositing) and starve torch's threads: steps were measured 3-10x (up to 100x under load) slower on 2 cores.
OMP_WAIT_POLICY=PASSIVE set before torch loads also cures it. Anything that asks numba for its thread count
(`numba.get_num_threads()`) or runs a parallel kernel starts the pool, so this runs when earthsynth.render and
earthsynth.mesh are imported. The pool is process-wide: this only acts before its first use and never overrides
a user's NUMBA_THREADING_LAYER; results do not change."""

from __future__ import annotations

import os


def prefer_workqueue_threads() -> None:
    import numba
    from numba.np.ufunc import parallel

    if (not getattr(parallel, "_is_initialized", True) and numba.config.THREADING_LAYER == "default"
            and "NUMBA_THREADING_LAYER" not in os.environ):
        numba.config.THREADING_LAYER = "workqueue"
