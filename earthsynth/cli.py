"""The `earthsynth` command line: one verb per stage; parse -> call a pipeline function -> report."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from earthsynth.errors import EarthsynthError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Generative Earth observation and satellite-to-3D city reconstruction.")
scene_app = typer.Typer(no_args_is_help=True, help="Create, import and inspect scene folders.")
cameras_app = typer.Typer(no_args_is_help=True, help="Satellite camera models of a scene.")
render_app = typer.Typer(no_args_is_help=True, help="Render views of a scene's truth.")
app.add_typer(scene_app, name="scene")
app.add_typer(cameras_app, name="cameras")
app.add_typer(render_app, name="render")

console = Console(stderr=True)


def user_errors(fn):
    """Turn an EarthsynthError into one clear message and exit code 2 (no traceback for user mistakes)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EarthsynthError as e:
            console.print(f"[bold red]error:[/] {e}", highlight=False)
            raise typer.Exit(code=2) from None
    return wrapper


@scene_app.command("import")
@user_errors
def scene_import(
    src: Path = typer.Argument(..., help="folder of satellite GeoTIFFs with RPC tags or sidecar RPC files"),
    out: Path = typer.Option(..., "--out", help="scene folder to create"),
    rpc_file: list[Path] = typer.Option([], "--rpc-file", help="RPC file for the image of the same stem "
                                        "(takes precedence over tags / sidecars; repeatable)"),
    height_min: Optional[float] = typer.Option(None, help="lowest ellipsoidal height of the scene (m)"),
    height_max: Optional[float] = typer.Option(None, help="highest ellipsoidal height of the scene (m)"),
):
    """Import a folder of real satellite views into a scene folder."""
    from earthsynth.io.scene_import import import_scene
    hr = (height_min, height_max) if height_min is not None and height_max is not None else None
    scene = import_scene(src, out, rpc_files=rpc_file, height_range=hr, log=console.print)
    console.print(f"scene [bold]{scene.name}[/]: {len(scene.views)} views, GSD {scene.gsd} m, "
                  f"heights {scene.height_range[0]:.1f}..{scene.height_range[1]:.1f} m -> {out}")


@scene_app.command("synth")
@user_errors
def scene_synth(
    out: Path = typer.Option(..., "--out", help="scene folder to create"),
    seed: int = typer.Option(0, help="random seed (same seed -> same bytes)"),
    size_m: float = typer.Option(300.0, "--size-m", help="side of the square scene in metres"),
    views: int = typer.Option(10, help="number of satellite views"),
    view_size: int = typer.Option(512, help="satellite view width and height in pixels"),
):
    """Synthesize a scene from the procedural world, with its ground truth."""
    from earthsynth.world.synth import SynthConfig, synthesize_scene
    config = SynthConfig(seed=seed, size_m=size_m, num_views=views, view_size=view_size)
    scene = synthesize_scene(config, out, progress=True)
    console.print(f"synthetic scene (seed {seed}): {len(scene.views)} views, GSD {scene.gsd} m -> {out}")


@scene_app.command("info")
@user_errors
def scene_info(scene: Path = typer.Argument(..., help="scene folder")):
    """Print a scene's summary as JSON."""
    from earthsynth.io.scene import load_scene
    print(json.dumps(load_scene(scene).to_json(), indent=2))


@cameras_app.command("approx")
@user_errors
def cameras_approx(
    scene: Path = typer.Argument(..., help="scene folder"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
):
    """Fit a pinhole camera to every view's RPC; write cameras/<view>.json and print the errors (px)."""
    from earthsynth.io.scene_cameras import approximate_scene_cameras
    for name, approx in approximate_scene_cameras(scene):
        if as_json:
            print(json.dumps({"view": name, "max_px": approx.max_px, "mean_px": approx.mean_px}))
        else:
            print(f"{name}: max {approx.max_px:.4f} px, mean {approx.mean_px:.4f} px")


@render_app.command("truth")
@user_errors
def render_truth(
    scene: Path = typer.Argument(..., help="a synthetic scene folder (with truth/)"),
    out: Path = typer.Option(..., "--out", help="folder for the PNGs"),
):
    """Render the truth mesh from the scene's truth test cameras."""
    from earthsynth.world.truth_views import render_truth_views
    paths = render_truth_views(scene, out)
    console.print(f"{len(paths)} truth views -> {out}")


@app.command("dsm")
@user_errors
def dsm(
    scene: Path = typer.Argument(..., help="scene folder"),
    out: Path = typer.Option(..., "--out", help="stage folder to write (dsm.tif, confidence.tif, points.ply)"),
    gsd: Optional[float] = typer.Option(None, help="ground cell in metres (default: the scene's GSD)"),
    roi: Optional[str] = typer.Option(None, help="xmin,ymin,xmax,ymax in ENU metres"),
    projection: str = typer.Option("rpc", help="rpc or pinhole"),
    height_min: Optional[float] = typer.Option(None, help="lowest ellipsoidal height (m)"),
    height_max: Optional[float] = typer.Option(None, help="highest ellipsoidal height (m)"),
    json_output: bool = typer.Option(False, "--json", help="one JSON summary line on stdout"),
):
    """Satellite multi-view height sweep: DSM + confidence + ENU point cloud (Orbit to Ground, stage 1)."""
    from earthsynth.mesh.cli_dsm import dsm_command
    dsm_command(scene, out, gsd, roi=roi, projection=projection, height_min=height_min,
                height_max=height_max, json_output=json_output, console=console)


@app.command("mesh")
@user_errors
def mesh(
    scene: Path = typer.Argument(..., help="scene folder (with cameras/ from `earthsynth cameras approx`)"),
    out: Path = typer.Option(..., "--out", help="run folder (dsm/, geometry/, texture/, refine/, mesh.glb)"),
    refiner: str = typer.Option("restorer", help="restorer or none"),
    iterations: int = typer.Option(2, help="refinement iterations (Orbit to Ground: 2)"),
    geometry_steps: Optional[int] = typer.Option(None, help="Adam steps per division (default: CPU budget)"),
    texture_steps: Optional[int] = typer.Option(None, help="texture optimisation steps"),
    seed: int = typer.Option(0, help="random seed"),
    json_output: bool = typer.Option(False, "--json", help="print metrics.json on stdout"),
):
    """Orbit to Ground: DSM -> Z-monotonic SDF mesh -> texture -> restoration refinement -> textured GLB."""
    from earthsynth.mesh.cli_mesh import mesh_command
    mesh_command(scene, out, refiner=refiner, iterations=iterations, geometry_steps=geometry_steps,
                 texture_steps=texture_steps, seed=seed, json_output=json_output, console=console)


@app.command("splat")
@user_errors
def splat(
    scene: Path = typer.Argument(..., help="scene folder (with cameras/ from `earthsynth cameras approx`)"),
    out: Path = typer.Option(..., "--out", help="run folder (dsm/, reconstruct/, idu/, splats.ply, flythrough.mp4)"),
    init: str = typer.Option("points", help="points (the MVS cloud) or mesh (points on --mesh, facades included)"),
    mesh_path: Optional[Path] = typer.Option(None, "--mesh", help="mesh.glb of `earthsynth mesh` (for --init mesh)"),
    refiner: str = typer.Option("flowedit", help="flowedit, sdedit, restorer or none (no IDU)"),
    steps: Optional[int] = typer.Option(None, help="satellite-stage iterations (default: CPU budget)"),
    episodes: Optional[int] = typer.Option(None, help="IDU episodes (Skyfall-GS: 5)"),
    episode_steps: Optional[int] = typer.Option(None, help="iterations per IDU episode"),
    seed: int = typer.Option(0, help="random seed"),
    json_output: bool = typer.Option(False, "--json", help="print metrics.json on stdout"),
):
    """Skyfall-GS: satellite 3DGS + curriculum Iterative Dataset Update -> splats.ply + fly-through video."""
    from earthsynth.cli_splat import splat_command
    splat_command(scene, out, init=init, mesh_path=mesh_path, refiner=refiner, steps=steps, episodes=episodes,
                  episode_steps=episode_steps, seed=seed, json_output=json_output, console=console)


@app.command("view")
@user_errors
def view(run: Path = typer.Argument(..., help="run folder (splats .ply / meshes .glb inside)"),
         port: int = typer.Option(8000, help="port on 127.0.0.1 (0: any free port)")):
    """Serve the web viewer for a run folder on 127.0.0.1 until Ctrl-C."""
    import time

    from earthsynth.viewer.server import list_viewable_files, serve, viewer_url
    server, url = serve(run, port=port)
    console.print(f"viewer: {url}   (Ctrl-C to stop)", highlight=False)
    for name in list_viewable_files(run):
        kind = "mesh" if name.lower().endswith(".glb") else "splats"
        console.print(f"  {viewer_url(url, **{kind: name})}", highlight=False)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@app.command("demo")
@user_errors
def demo(out: Path = typer.Option(Path("out/demo"), "--out", help="output folder"),
         seed: int = typer.Option(0, help="random seed"),
         reconstruct: bool = typer.Option(True, "--3d/--no-3d", help="include the mesh and splat reconstructions"),
         generate: bool = typer.Option(True, "--generate/--no-generate", help="include the MetaEarth mosaic")):
    """The main job on the built-in synthetic scene (what `make demo` runs)."""
    from earthsynth.demo import run_demo
    index = run_demo(out, seed=seed, reconstruct=reconstruct, generate=generate, log=console.print)
    console.print(f"[bold green]demo done[/]: open {index}")


def _add_generate_app() -> None:
    # declared after user_errors: the sub-app reuses it
    from earthsynth.generate.cli import generate_app
    app.add_typer(generate_app, name="generate", help="MetaEarth: train, sample, cascade, tile, augment.")


_add_generate_app()


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())


if __name__ == "__main__":   # python -m earthsynth.cli (scripts/finetune_restorer.sh)
    main()
