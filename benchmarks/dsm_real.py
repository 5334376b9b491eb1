"""Benchmark: height-sweep DSM of the real Pleiades pair (Reunion, s2p test data) against s2p's own DSM.

Imports the pair into a temporary scene (height range 2230..2420 m, around the 2270..2376 m ground), runs
`run_mvs` over the whole common footprint on a 0.5 m UTM grid (the reference's grid, so no resampling), and
compares with `expected_s2p_dsm.tif` over every valid reference cell: median vertical alignment, completeness =
valid estimate within 1 m after alignment (`completeness_valid`: any valid estimate). "seconds" is the wall time
of `run_mvs` (JIT compilation warmed up first on a small crop, reported apart as "warmup_seconds");
"cpu_seconds" is the process CPU time over all threads (comparable across machines under load).

    python benchmarks/dsm_real.py [--projection rpc|pinhole] [--roi XMIN,YMIN,XMAX,YMAX]   (ENU metres)

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from earthsynth.io.scene_import import import_scene
from earthsynth.mesh.mvs import MVSConfig, run_mvs
from earthsynth.metrics.geometry import compare_dsm

PAIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "s2p_pair_reunion"
HEIGHT_RANGE = (2230.0, 2420.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projection", choices=("rpc", "pinhole"), default="rpc")
    parser.add_argument("--roi", default=None, help="xmin,ymin,xmax,ymax in ENU metres (default: whole scene)")
    parser.add_argument("--pair", type=Path, default=PAIR)
    args = parser.parse_args()
    roi = tuple(float(v) for v in args.roi.split(",")) if args.roi else None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scene = import_scene(args.pair, tmp / "scene", height_range=HEIGHT_RANGE, log=lambda *_: None)
        config = MVSConfig(gsd_m=0.5, roi_enu=roi, projection=args.projection)
        t0 = time.perf_counter()
        run_mvs(scene.root, tmp / "warmup", MVSConfig(gsd_m=0.5, roi_enu=(-20, -20, 20, 20),
                                                       projection=args.projection))
        warmup = time.perf_counter() - t0
        t0, cpu0 = time.perf_counter(), time.process_time()
        result = run_mvs(scene.root, tmp / "dsm", config)
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
        meta = json.loads(result.meta_path.read_text())
        metrics = compare_dsm(result.dsm_path, args.pair / "expected_s2p_dsm.tif", align="median")
    print(json.dumps({
        "bench": "dsm_real", "mae": round(metrics["mae"], 4), "rmse": round(metrics["rmse"], 4),
        "completeness": round(metrics["completeness"], 4), "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "alignment_m": round(metrics["vertical_shift"], 4),
        "completeness_valid": round(metrics["completeness_valid"], 4),
        "median_abs": round(metrics["median_abs"], 4), "nmad": round(metrics["nmad"], 4),
        "threshold_m": metrics["threshold_m"], "projection": args.projection,
        "grid": [result.grid.width, result.grid.height], "hypotheses": result.sweep.count,
        "height_step_m": round(result.sweep.step, 4),
        "pointing_offsets_px": {k: v["offset_px"] for k, v in meta["pointing"].get("views", {}).items()},
        "timing_s": meta["timing_s"], "warmup_seconds": round(warmup, 2),
    }))


if __name__ == "__main__":
    main()
