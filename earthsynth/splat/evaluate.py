"""Scores of the splats on a synthetic scene's truth: PSNR / SSIM on the low-altitude truth views and the DSM of
rendered depth against the truth surface (Skyfall-GS Table 3: MAE / RMSE of a DSM unprojected from 3DGS depth)."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from earthsynth.geo.pinhole import Camera


@torch.no_grad()
def view_scores(scene, trainer, *, prefix: str = "oblique") -> dict:
    from earthsynth.geo.pinhole import camera_from_dict
    from earthsynth.metrics.image import psnr, ssim
    from earthsynth.refine.pairs import SKY_RGB

    views_json = scene.truth_path("views")
    if views_json is None or not views_json.is_file():
        return {}
    scores = {}
    for name, cam in json.loads(views_json.read_text()).items():
        png = views_json.parent / f"{name}.png"
        if not name.startswith(prefix) or not png.is_file():
            continue
        target = torch.from_numpy(np.asarray(Image.open(png).convert("RGB"), np.float32) / 255.0)
        colors, alphas, _ = trainer.render([camera_from_dict(cam)])
        # the truth views show sky where there is no surface: composite over it, as the mesh scores do (over the
        # trainer's black background the sky alone cost ~8 dB)
        uncovered = (1.0 - alphas[0]).cpu()
        background = torch.tensor(trainer.background, dtype=torch.float32)
        sky = torch.tensor(SKY_RGB, dtype=torch.float32)
        render = (colors[0, ..., :3].cpu() + uncovered * (sky - background)).clamp(0, 1)
        scores[name] = {"psnr": float(psnr(render, target)), "ssim": float(ssim(render, target))}
    if not scores:
        return {}
    return {"psnr": float(np.mean([s["psnr"] for s in scores.values()])),
            "ssim": float(np.mean([s["ssim"] for s in scores.values()])), "views": scores}


@torch.no_grad()
def depth_dsm(trainer, bounds_xy, cell_m: float, *, altitude_m: float = 5000.0, size_px: int = 256,
              min_alpha: float = 0.2) -> np.ndarray:
    """(H, W) ENU heights of the splats seen from straight above: expected depth from a distant narrow nadir
    camera where the accumulated alpha reaches `min_alpha`, unprojected to points and averaged per grid cell
    (NaN where no splat was seen)."""
    x0, y0, x1, y1 = bounds_xy
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)
    fov = float(np.degrees(2 * np.arctan(side / 2 / altitude_m)))
    camera = Camera.look_at([cx, cy, altitude_m], [cx, cy, 0.0], width=size_px, height=size_px, fov_x_deg=fov,
                            up=(0.0, 1.0, 0.0))
    depth, alphas, _ = trainer.render([camera], render_mode="ED")
    d = depth[0, ..., 0].cpu().numpy().astype(np.float64)
    ok = (alphas[0, ..., 0].cpu().numpy() >= min_alpha) & np.isfinite(d) & (d > 0)
    uv = camera.pixel_grid()[ok]
    points = camera.unproject(uv, d[ok])
    width, height = int(np.ceil((x1 - x0) / cell_m)), int(np.ceil((y1 - y0) / cell_m))
    col = np.clip(((points[:, 0] - x0) / cell_m).astype(int), 0, width - 1)
    row = np.clip(((y1 - points[:, 1]) / cell_m).astype(int), 0, height - 1)
    sums, counts = np.zeros(height * width), np.zeros(height * width)
    np.add.at(sums, row * width + col, points[:, 2])
    np.add.at(counts, row * width + col, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts).reshape(height, width)


def dsm_scores(scene, trainer, cell_m: float = 2.0) -> dict:
    """MAE / RMSE / completeness of `depth_dsm` against the truth points' top surface on the same ENU grid, over
    the central 80 % of the scene."""
    from earthsynth.io.pointcloud import read_point_cloud_ply
    from earthsynth.render.heightfield import heightfield_from_points

    points_path = scene.truth_path("points")
    if points_path is None or not points_path.is_file():
        return {}
    x0, y0, x1, y1 = scene.bounds_enu
    mx, my = (x1 - x0) * 0.1, (y1 - y0) * 0.1
    bounds = (x0 + mx, y0 + my, x1 - mx, y1 - my)
    truth_points, _, _ = read_point_cloud_ply(points_path)
    truth = heightfield_from_points(truth_points, bounds, cell_m)
    estimate = depth_dsm(trainer, bounds, cell_m)
    valid = np.isfinite(estimate)
    diff = estimate[valid] - truth[valid]
    if diff.size == 0:
        return {"completeness": 0.0}
    return {"mae": float(np.abs(diff).mean()), "rmse": float(np.sqrt((diff ** 2).mean())),
            "completeness": float(valid.mean()), "cell_m": cell_m}


def splat_scores(scene, trainer) -> dict:
    return {"views": view_scores(scene, trainer), "dsm": dsm_scores(scene, trainer)}
