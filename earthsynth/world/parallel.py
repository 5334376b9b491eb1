"""Render independent views of one world in worker processes.

Each view is a few seconds of mostly single-threaded numpy / torch work, so two processes on two cores nearly
halve `scene synth`. The world is handed to the workers by fork (no pickling of the big mesh); results are
small (one image and one camera per view). Every view draws from its own seed, so the output does not depend
on the number of workers. Callers must not have run torch work in the parent before forking (OpenMP thread
pools do not survive a fork): `synthesize_scene` renders first and writes afterwards.
"""

from __future__ import annotations

import multiprocessing as mp
import os

_WORLD = None


def _init_worker() -> None:
    import numba
    import torch

    torch.set_num_threads(1)
    numba.set_num_threads(1)


def _call(job):
    fn, item = job
    return fn(_WORLD, item)


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def map_views(fn, world, items, *, workers: int | None = None, on_done=lambda: None) -> list:
    """[fn(world, item) for item in items], in order, using `workers` forked processes."""
    global _WORLD
    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(items) <= 1 or "fork" not in mp.get_all_start_methods():
        results = []
        for item in items:
            results.append(fn(world, item))
            on_done()
        return results
    _WORLD = world
    try:
        with mp.get_context("fork").Pool(workers, initializer=_init_worker) as pool:
            results = []
            for result in pool.imap(_call, [(fn, item) for item in items]):
                results.append(result)
                on_done()
            return results
    finally:
        _WORLD = None
