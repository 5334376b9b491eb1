"""What the splat stage leaves for people to look at: per-episode refinement sheets, the coverage curve, the
fly-through video."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from earthsynth.geo.pinhole import Camera


def _to_uint8(images) -> np.ndarray:
    return (images.clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)


def save_episode(folder: Path, trainer, result, save_splats, columns: int = 8) -> None:
    """episode_k/: refined.png (renders on top, each refinement sample below), splats.ply, episode.json, state.pt
    (written last: its presence marks the episode complete)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    n = min(columns, len(result.renders_bhw3))
    rows = [torch.cat(list(result.renders_bhw3[:n]), dim=1)]
    rows += [torch.cat(list(sample[:n]), dim=1) for sample in result.refined_nbhw3]
    Image.fromarray(_to_uint8(torch.cat(rows, dim=0))).save(folder / "refined.png")
    save_splats(trainer, folder / "splats.ply", None)
    meta = {"episode": result.episode, "elevation_deg": result.elevation_deg, "radius_m": result.radius_m,
            "views": len(result.cameras), "samples_per_view": int(result.refined_nbhw3.shape[0]),
            "num_gaussians": trainer.model.num, "log": result.log}
    (folder / "episode.json").write_text(json.dumps(meta, indent=1))
    trainer.save(folder / "state.pt")


def write_coverage(path: Path, trainer, episode_cameras: list, visible_fraction) -> dict:
    """Cumulative share of the final Gaussians that the cameras of episodes 1..k see (supplementary 0.D.0.6; the
    final model stands in for the whole surface, as in the paper)."""
    seen = torch.zeros(trainer.model.num, dtype=torch.bool)
    curve = []
    for cameras in episode_cameras:
        seen |= visible_fraction(trainer, cameras)
        curve.append(float(seen.float().mean()))
    out = {"episodes": list(range(1, len(curve) + 1)), "coverage": curve}
    path.write_text(json.dumps(out, indent=1))
    return out


def flythrough_cameras(size_m: float, ground_z: float, *, frames: int, size_px: int) -> list[Camera]:
    """A low-altitude orbit: 0.3 x scene side from the centre, 30 degrees down, one turn."""
    target = np.array([0.0, 0.0, ground_z])
    return [Camera.orbit(target, elevation_deg=30.0, azimuth_deg=360.0 * k / frames, radius=0.45 * size_m,
                         width=size_px, height=size_px, fov_x_deg=60.0) for k in range(frames)]


@torch.no_grad()
def write_flythrough(path: Path, trainer, size_m: float, ground_z: float, *, frames: int = 48,
                     size_px: int = 192) -> Path | None:
    from earthsynth.io.video import write_mp4
    if frames < 1:
        return None
    size_px += size_px % 2
    images = []
    for camera in flythrough_cameras(size_m, ground_z, frames=frames, size_px=size_px):
        colors, _, _ = trainer.render([camera])
        images.append(_to_uint8(colors[0, ..., :3].cpu()))
    return write_mp4(path, np.stack(images), fps=12)
