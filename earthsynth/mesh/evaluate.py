"""Scores of a reconstructed mesh against a synthetic scene's truth: geometry (P / R / F1 at the GSD-scaled
threshold, Chamfer; DSM MAE / RMSE) and appearance (PSNR / SSIM on the low-altitude truth views)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from earthsynth.io.mesh import TexturedMesh

CENTRAL_FRACTION = 0.8   # Orbit to Ground scores the central 800 m of its 1 km scenes


def central_bounds(bounds_xy, fraction: float = CENTRAL_FRACTION) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = bounds_xy
    cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 * fraction, (y1 - y0) / 2 * fraction
    return cx - hx, cy - hy, cx + hx, cy + hy


def geometry_scores(scene, mesh: TexturedMesh, dsm_path: Path | None = None, *, seed: int = 0) -> dict:
    """F1 / Chamfer against truth/points.ply (central 80 %), and the mesh DSM against truth/dsm.tif."""
    from earthsynth.io.pointcloud import read_point_cloud_ply
    from earthsynth.metrics.geometry import compare_dsm
    from earthsynth.metrics.geometry_points import gsd_threshold_m, mesh_point_metrics

    scores: dict = {}
    points_path = scene.truth_path("points")
    if points_path is not None and points_path.is_file():
        truth_points, _, _ = read_point_cloud_ply(points_path)
        threshold = gsd_threshold_m(scene.gsd)
        m = mesh_point_metrics(mesh.vertices_n3, mesh.faces_f3, truth_points, threshold_m=threshold, seed=seed,
                               bounds_xy=central_bounds(scene.bounds_enu))
        scores["points"] = {"threshold_m": threshold, **{k: m[k] for k in ("precision", "recall", "f1", "chamfer")}}
    dsm_truth = scene.truth_path("dsm")
    if dsm_path is not None and dsm_truth is not None and dsm_truth.is_file():
        d = compare_dsm(dsm_path, dsm_truth, align="none")   # same frame: no vertical shift is hidden
        scores["dsm"] = {k: d[k] for k in ("mae", "rmse", "completeness") if k in d}
    return scores


def truth_views(scene) -> dict[str, tuple[object, np.ndarray]]:
    """name -> (camera, uint8 image) of the scene's truth test views (empty if it has none)."""
    from earthsynth.geo.pinhole import camera_from_dict

    views_json = scene.truth_path("views")
    if views_json is None or not views_json.is_file():
        return {}
    out = {}
    for name, cam in json.loads(views_json.read_text()).items():
        png = views_json.parent / f"{name}.png"
        if png.is_file():
            out[name] = (camera_from_dict(cam), np.asarray(Image.open(png).convert("RGB")))
    return out


def appearance_scores(mesh: TexturedMesh, views: dict, *, prefix: str = "oblique") -> dict:
    """Mean PSNR / SSIM of the mesh's unlit render (sky background) against the truth views whose name starts
    with `prefix` (the low-altitude 45 degree views), and per view."""
    from earthsynth.metrics.image import psnr, ssim
    from earthsynth.refine.pairs import SKY_RGB
    from earthsynth.render.mesh import render_textured

    per_view = {}
    for name, (camera, image) in views.items():
        if not name.startswith(prefix):
            continue
        render = render_textured(mesh, camera, supersample=2, background=SKY_RGB).rgb_hw3
        target = torch.from_numpy(image.astype(np.float32) / 255.0)
        per_view[name] = {"psnr": float(psnr(render, target)), "ssim": float(ssim(render, target))}
    if not per_view:
        return {}
    return {"psnr": float(np.mean([v["psnr"] for v in per_view.values()])),
            "ssim": float(np.mean([v["ssim"] for v in per_view.values()])), "views": per_view}
