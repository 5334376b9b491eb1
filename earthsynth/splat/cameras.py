"""Camera schedules of Skyfall-GS: the pseudo-cameras of the reconstruction stage's depth supervision
(supplementary 0.B.1.2) and the curriculum orbits of the Iterative Dataset Update (0.B.1.5).

The paper's lengths are in DFC2019 scene units (a 512-unit look-at grid, radii 300 -> 250 units); here every
length is a fraction of the scene's side so the schedules fit any scene size. Elevations are the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from earthsynth.errors import ConfigError
from earthsynth.geo.pinhole import Camera


def _check_pair(name: str, pair) -> tuple[float, float]:
    if len(pair) != 2:
        raise ConfigError(f"{name} must be a (start, end) pair, got {pair!r}")
    return float(pair[0]), float(pair[1])


@dataclass(frozen=True)
class PseudoCameraConfig:
    elevations_deg: tuple[float, float] = (80.0, 45.0)   # Skyfall-GS 0.B.1.2: linearly 80 -> 45 degrees
    radii_frac: tuple[float, float] = (0.59, 0.49)       # 300 -> 250 units over a 512-unit grid, x scene side
    look_at_sigma_frac: float = 0.25                     # x, y ~ N(0, 128 units): 128 / 512 of the grid
    views_per_draw: int = 24                             # Skyfall-GS: 24 views every 10 iterations
    every: int = 10
    size_px: int = 128                                   # Skyfall-GS renders 1024^2; CPU budget here
    fov_x_deg: float = 40.0

    def __post_init__(self):
        _check_pair("elevations_deg", self.elevations_deg)
        _check_pair("radii_frac", self.radii_frac)
        if self.views_per_draw < 1 or self.every < 1 or self.size_px < 8:
            raise ConfigError("views_per_draw and every must be >= 1, size_px >= 8")


def pseudo_cameras(progress: float, scene_size_m: float, ground_z: float, config: PseudoCameraConfig, *,
                   rng: np.random.Generator, count: int | None = None) -> list[Camera]:
    """Pseudo-cameras at training progress in [0, 1]: elevation and radius interpolated linearly from start to
    end, azimuths uniform, look-at points ~ N(0, sigma) on the ground plane around the scene centre."""
    t = float(np.clip(progress, 0.0, 1.0))
    e0, e1 = config.elevations_deg
    r0, r1 = config.radii_frac
    elevation, radius = e0 + (e1 - e0) * t, (r0 + (r1 - r0) * t) * scene_size_m
    cameras = []
    for _ in range(count or config.views_per_draw):
        xy = rng.normal(0.0, config.look_at_sigma_frac * scene_size_m, size=2)
        target = np.array([xy[0], xy[1], ground_z])
        cameras.append(Camera.orbit(target, elevation_deg=elevation, azimuth_deg=rng.uniform(0.0, 360.0),
                                    radius=radius, width=config.size_px, height=config.size_px,
                                    fov_x_deg=config.fov_x_deg))
    return cameras


@dataclass(frozen=True)
class CurriculumConfig:
    episodes: int = 5                                    # Skyfall-GS: N_e = 5
    elevations_deg: tuple[float, float] = (85.0, 45.0)   # Skyfall-GS: 85 -> 45 degrees across episodes
    radii_frac: tuple[float, float] = (0.59, 0.49)       # Skyfall-GS: 300 -> 250 units (DFC2019), x scene side / 512
    look_at_grid: tuple[int, int] = (3, 3)               # Skyfall-GS: N_p = 9 look-at points, a 3 x 3 grid ...
    grid_width_frac: float = 0.5                         # ... 512 units wide: half the scene side here
    views_per_point: int = 6                             # Skyfall-GS: N_v = 6
    size_px: int = 128                                   # Skyfall-GS renders 2048^2; CPU budget here
    fov_x_deg: float = 40.0

    def __post_init__(self):
        _check_pair("elevations_deg", self.elevations_deg)
        _check_pair("radii_frac", self.radii_frac)
        if self.episodes < 1 or self.views_per_point < 1 or min(self.look_at_grid) < 1:
            raise ConfigError("episodes, views_per_point and the look-at grid must be >= 1")

    def elevation(self, episode: int) -> float:
        return _interpolate(self.elevations_deg, episode, self.episodes)

    def radius(self, episode: int, scene_size_m: float) -> float:
        return _interpolate(self.radii_frac, episode, self.episodes) * scene_size_m


def _interpolate(pair, episode: int, episodes: int) -> float:
    a, b = pair
    return a if episodes == 1 else a + (b - a) * episode / (episodes - 1)


def look_at_points(scene_size_m: float, ground_z: float, config: CurriculumConfig) -> np.ndarray:
    """(N_p, 3) look-at points: a grid `grid_width_frac` of the scene wide, centred on the origin."""
    nx, ny = config.look_at_grid
    half = config.grid_width_frac * scene_size_m / 2
    xs = np.linspace(-half, half, nx) if nx > 1 else np.zeros(1)
    ys = np.linspace(-half, half, ny) if ny > 1 else np.zeros(1)
    return np.array([[x, y, ground_z] for y in ys for x in xs])


def episode_cameras(episode: int, scene_size_m: float, ground_z: float, config: CurriculumConfig, *,
                    seed: int = 0) -> list[Camera]:
    """N_p x N_v orbit cameras of one IDU episode: per look-at point, N_v azimuths evenly spaced from a random
    (seeded) start, at the episode's elevation and radius."""
    if not 0 <= episode < config.episodes:
        raise ConfigError(f"episode must be in [0, {config.episodes}), got {episode}")
    rng = np.random.default_rng([int(seed), int(episode), 5150])
    elevation, radius = config.elevation(episode), config.radius(episode, scene_size_m)
    cameras = []
    for point in look_at_points(scene_size_m, ground_z, config):
        start = rng.uniform(0.0, 360.0)
        for k in range(config.views_per_point):
            cameras.append(Camera.orbit(point, elevation_deg=elevation,
                                        azimuth_deg=start + 360.0 * k / config.views_per_point, radius=radius,
                                        width=config.size_px, height=config.size_px, fov_x_deg=config.fov_x_deg))
    return cameras
