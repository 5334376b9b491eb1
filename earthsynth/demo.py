"""The main job on the built-in synthetic scene (`make demo`).

Synthesize a scene, import its views through the real-RPC path, approximate the cameras, render the truth
test views, check the RPCs against the exact cameras, and write an HTML page that shows it all."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
from PIL import Image


def _thumbnail(src_tif: Path, dst_png: Path, size: int = 256) -> None:
    from earthsynth.io.raster import read_raster
    data = read_raster(src_tif).data
    img = np.moveaxis(data[:3] if data.shape[0] >= 3 else np.repeat(data[:1], 3, 0), 0, -1)
    if img.dtype != np.uint8:
        lo, hi = np.percentile(img, [1, 99])
        img = np.clip((img - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8)
    pil = Image.fromarray(img)
    pil.thumbnail((size, size))
    pil.save(dst_png)


def run_demo(out: str | Path, *, seed: int = 0, reconstruct: bool = True, generate: bool = True, log=print) -> Path:
    from earthsynth.io.scene import load_scene
    from earthsynth.io.scene_cameras import approximate_scene_cameras
    from earthsynth.io.scene_import import import_scene
    from earthsynth.world.checks import rpc_vs_exact_camera_px
    from earthsynth.world.synth import SynthConfig, synthesize_scene
    from earthsynth.world.truth_views import render_truth_views

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scene_dir, imported_dir = out / "scene", out / "imported"
    if (scene_dir / "scene.json").exists():
        log(f"reusing {scene_dir} (delete it to synthesize again)")
        scene = load_scene(scene_dir)
    else:
        log("synthesizing the built-in scene...")
        scene = synthesize_scene(SynthConfig(seed=seed), scene_dir, progress=True)
    rpc_px = rpc_vs_exact_camera_px(scene)
    log(f"fitted RPCs vs exact cameras over the truth DSM: max {max(rpc_px.values()):.2e} px")

    if not (imported_dir / "scene.json").exists():
        log("importing the views through the RPC path...")
        import_scene(scene_dir / "images", imported_dir, log=log)
    approx = dict(approximate_scene_cameras(imported_dir))
    log(f"pinhole approximations: max {max(a.max_px for a in approx.values()):.2e} px")

    log("rendering the truth test views...")
    truth_pngs = render_truth_views(scene_dir, out / "truth_views")
    sat_dir = out / "satellite_views"
    sat_dir.mkdir(exist_ok=True)
    sat_pngs = []
    for view in scene.views:
        png = sat_dir / f"{view.name}.png"
        _thumbnail(scene.image_path(view.name), png, size=384)
        sat_pngs.append((view, png))
    metrics = {"rpc_vs_exact_camera_max_px": rpc_px,
               "pinhole_approx": {k: {"max_px": v.max_px, "mean_px": v.mean_px} for k, v in approx.items()}}
    three_d = {}
    if reconstruct:
        from earthsynth.demo_3d import run_demo_mesh, run_demo_splat
        log("Orbit to Ground: height sweep, Z-monotonic SDF mesh, texture, restoration refinement...")
        mesh_run = run_demo_mesh(out, scene_dir, seed=seed, log=log)
        log("Skyfall-GS: satellite 3DGS, then curriculum IDU with FlowEdit...")
        splat_metrics = run_demo_splat(out, scene_dir, mesh_run.out_dir, seed=seed, log=log)
        three_d = {"mesh": mesh_run.metrics, "splat": splat_metrics}
        metrics.update(three_d)
    mosaic = []
    if generate:
        from earthsynth.demo_mosaic import run_demo_mosaic
        log("MetaEarth: cascaded unbounded generation, 64 -> 16 -> 4 m/px...")
        mosaic = run_demo_mosaic(out, scene, seed=seed, log=log)
        metrics["mosaic"] = [{"stage": s.stage, "width": s.width, "height": s.height, "m_per_px": s.m_per_px,
                              "seconds": round(s.seconds, 1)} for s in mosaic]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return write_index(out, scene, sat_pngs, truth_pngs, metrics, mosaic, three_d)


def _mosaic_section(out: Path, stages) -> str:
    if not stages:
        return ""
    figures = [('mosaic/map_preview.png', "input map, 64 m/px")] + [
        (f"mosaic/{s.preview.name}", f"stage {s.stage}: {s.width} x {s.height} px at {s.m_per_px:g} m/px "
                                     f"(<a href='mosaic/{s.path.name}'>COG</a>)") for s in stages]
    body = "".join(f'<figure><a href="{html.escape(p)}"><img class="big" src="{html.escape(p)}"></a>'
                   f"<figcaption>{c}</figcaption></figure>" for p, c in figures)
    return ("<h2>MetaEarth: resolution-guided self-cascading generation</h2><p>Stage 1 refines the centred "
            "128 px of the map, stage 2 all of stage 1. Every stage: sliding windows with half overlap and shared "
            "initial noise, "
            f"streamed into a georeferenced COG.</p>{body}")


def _three_d_section(three_d: dict) -> str:
    if not three_d:
        return ""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td><code>{html.escape(json.dumps(v))}</code></td></tr>"
                   for part in ("mesh", "splat") for k, v in _headline(three_d.get(part, {}), part).items())
    return ("<h2>3D reconstructions</h2><p>Textured mesh: <a href='mesh/mesh.glb'>mesh/mesh.glb</a> (ENU, origin "
            "in the glTF extras), DSM from the mesh: <a href='mesh/dsm_from_mesh.tif'>mesh/dsm_from_mesh.tif</a>. "
            "Gaussian splats: <a href='splat/splats.ply'>splat/splats.ply</a>, fly-through: "
            "<a href='splat/flythrough.mp4'>splat/flythrough.mp4</a>. Browse both with <code>earthsynth view "
            "OUT</code>. Full numbers: <a href='mesh/metrics.json'>mesh</a>, <a href='splat/metrics.json'>splat"
            f"</a>.</p><table>{rows}</table>")


def _headline(metrics: dict, part: str) -> dict:
    """The numbers a reader looks for first (everything else stays in the metrics files)."""
    keep = ("geometry", "appearance", "reconstruct", "idu", "num_gaussians", "seconds")
    return {f"{part}: {k}": v for k, v in metrics.items() if any(k.startswith(p) for p in keep)}


def write_index(out: Path, scene, sat_pngs, truth_pngs, metrics, mosaic=(), three_d=None) -> Path:
    rel = lambda p: html.escape(str(Path(p).relative_to(out)))  # noqa: E731
    rows = "".join(
        f"<tr><td>{html.escape(v.name)}</td><td>{v.date or ''}</td><td>{v.sun_elevation or ''}</td>"
        f"<td>{metrics['rpc_vs_exact_camera_max_px'][v.name]:.2e}</td>"
        f"<td>{metrics['pinhole_approx'][v.name]['max_px']:.2e}</td></tr>" for v, _ in sat_pngs)
    sat = "".join(f'<figure><img src="{rel(p)}"><figcaption>{html.escape(v.name)}</figcaption></figure>'
                  for v, p in sat_pngs)
    truth = "".join(f'<figure><img src="{rel(p)}"><figcaption>{html.escape(Path(p).stem)}</figcaption></figure>'
                    for p in truth_pngs)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>earthsynth demo</title>
<style>body{{font-family:sans-serif;margin:2em;background:#111;color:#eee}} figure{{display:inline-block;margin:4px}}
img{{max-width:256px;display:block}} img.big{{max-width:512px}} td,th{{padding:2px 10px;text-align:right}}</style></head><body>
<h1>earthsynth demo: synthetic scene <code>{html.escape(scene.name)}</code></h1>
<p>{len(scene.views)} satellite views, GSD {scene.gsd} m, origin {scene.origin['lat']:.5f}, {scene.origin['lon']:.5f}.
Truth: <code>scene/truth/</code> (DSM, points, mesh). Metrics: <a href="metrics.json">metrics.json</a>.</p>
<table><tr><th>view</th><th>date</th><th>sun elevation</th><th>RPC vs exact camera, max px</th>
<th>pinhole approximation, max px</th></tr>{rows}</table>
<h2>Satellite views</h2>{sat}<h2>Truth low-altitude test views</h2>{truth}{_three_d_section(three_d or {})}{_mosaic_section(out, mosaic)}</body></html>"""
    index = out / "index.html"
    index.write_text(page)
    return index
