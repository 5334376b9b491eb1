"""`earthsynth dsm SCENE --out DIR`: the height-sweep MVS stage as a command (wired in `earthsynth.cli`).

Kept out of cli.py so the command's logic is testable without typer; cli.py only declares the options:

    @app.command("dsm")
    @user_errors
    def dsm(scene: Path = typer.Argument(...), out: Path = typer.Option(..., "--out"),
            gsd: Optional[float] = typer.Option(None, help="ground cell in metres (default: the scene's GSD)"),
            roi: Optional[str] = typer.Option(None, help="xmin,ymin,xmax,ymax in ENU metres"),
            projection: str = typer.Option("rpc", help="rpc or pinhole"),
            height_min: Optional[float] = None, height_max: Optional[float] = None,
            json_output: bool = typer.Option(False, "--json")):
        dsm_command(scene, out, gsd, roi=roi, projection=projection, height_min=height_min,
                    height_max=height_max, json_output=json_output)
"""

from __future__ import annotations

import json
from pathlib import Path

from earthsynth.errors import ConfigError


def parse_roi(text: str | None) -> tuple[float, float, float, float] | None:
    """"xmin,ymin,xmax,ymax" (ENU metres) -> tuple; None stays None."""
    if text is None or not str(text).strip():
        return None
    parts = str(text).split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise ConfigError(f"--roi must be four numbers xmin,ymin,xmax,ymax (ENU metres), got {text!r}")
    return values


def _height_range(height_min: float | None, height_max: float | None):
    if (height_min is None) != (height_max is None):
        raise ConfigError("give both --height-min and --height-max, or neither (the scene's range is used)")
    return None if height_min is None else (float(height_min), float(height_max))


def dsm_command(scene: Path, out: Path, gsd: float | None = None, *, roi: str | None = None,
                projection: str = "rpc", height_min: float | None = None, height_max: float | None = None,
                json_output: bool = False, progress: bool = True, console=None):
    """Run the height sweep on `scene` into `out` and report: a rich summary on stderr, and with `json_output`
    one JSON line on stdout. Errors are EarthsynthError (the CLI prints them without a traceback)."""
    from rich.console import Console

    from earthsynth.mesh.mvs import MVSConfig, run_mvs

    console = console or Console(stderr=True)
    config = MVSConfig(gsd_m=gsd, roi_enu=parse_roi(roi), projection=projection,
                       height_range=_height_range(height_min, height_max))
    result = run_mvs(Path(scene), Path(out), config, progress=progress)
    summary = {
        "dsm": str(result.dsm_path), "confidence": str(result.confidence_path), "points": str(result.points_path),
        "grid": [result.grid.width, result.grid.height], "gsd_m": result.grid.gsd, "crs": result.grid.crs,
        "hypotheses": result.sweep.count, "height_step_m": round(result.sweep.step, 4),
        "pairs": [[a, b, round(bh, 3)] for a, b, bh in result.pairs],
        "valid_fraction": round(result.valid_fraction, 4), "num_points": result.num_points,
        "seconds": round(result.seconds, 2),
    }
    console.print(f"DSM {result.grid.width}x{result.grid.height} at {result.grid.gsd:g} m "
                  f"({100 * result.valid_fraction:.1f}% valid, {result.num_points} ENU points, "
                  f"{len(result.pairs)} pairs, {result.sweep.count} heights of {result.sweep.step:.2f} m) "
                  f"in {result.seconds:.1f} s -> {result.out_dir}", highlight=False)
    if json_output:
        print(json.dumps(summary))
    return result
