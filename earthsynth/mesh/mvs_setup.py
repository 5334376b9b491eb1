"""What the height sweep sweeps: the ground grid, the views (pixels + camera model), the pairs, the heights.

Ground grid: square cells of `gsd` metres in the scene CRS (UTM), north-up, covering the scene's `bounds_enu`
(or a region of interest inside it), with its edges snapped to multiples of the GSD so that two runs at the same
GSD share their cells (and so that a 0.5 m grid lines up with s2p's 0.5 m DSMs).

Pairs and height step: for a pair of views the base-to-height ratio B/H is the horizontal parallax (metres) per
metre of height, |tan(z_a) u_a - tan(z_b) u_b| with z the zenith angle and u the horizontal unit vector towards
each satellite. A height step of `step_px * gsd / (B/H)` moves the two views' samples `step_px` pixels apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from itertools import combinations

import numpy as np
from affine import Affine
from pyproj import Transformer

from earthsynth.errors import ConfigError, SceneError


@dataclass(frozen=True)
class GroundGrid:
    """North-up cells of `gsd` metres in `crs`; `transform` maps the top-left corner (rasterio convention)."""

    transform: Affine
    width: int
    height: int
    crs: str

    @property
    def gsd(self) -> float:
        return float(self.transform.a)

    def centers(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of the cell centres of a window, each (len(rows), len(cols))."""
        r = np.arange(rows.start, rows.stop, dtype=np.float64) + 0.5
        c = np.arange(cols.start, cols.stop, dtype=np.float64) + 0.5
        x = self.transform.c + self.transform.a * c
        y = self.transform.f + self.transform.e * r
        return np.broadcast_to(x[None, :], (len(r), len(c))), np.broadcast_to(y[:, None], (len(r), len(c)))

    def to_dict(self) -> dict:
        return {"crs": self.crs, "width": self.width, "height": self.height, "gsd_m": self.gsd,
                "transform": list(self.transform)[:6]}


def ground_grid(scene, gsd: float, roi_enu=None) -> GroundGrid:
    """The grid over `scene.bounds_enu`, intersected with `roi_enu` = (xmin, ymin, xmax, ymax) ENU metres."""
    xmin, ymin, xmax, ymax = scene.bounds_enu
    if roi_enu is not None:
        rx0, ry0, rx1, ry1 = (float(v) for v in roi_enu)
        if not (rx1 > rx0 and ry1 > ry0):
            raise ConfigError(f"roi_enu must be (xmin, ymin, xmax, ymax) with max > min, got {tuple(roi_enu)}")
        xmin, ymin, xmax, ymax = max(xmin, rx0), max(ymin, ry0), min(xmax, rx1), min(ymax, ry1)
        if not (xmax > xmin and ymax > ymin):
            raise ConfigError(f"roi_enu {tuple(roi_enu)} does not overlap the scene bounds {scene.bounds_enu}",
                              hint="give a region inside the scene's bounds_enu (scene.json)")
    # the ENU box's outline in the scene CRS (UTM is rotated by the meridian convergence, so use its edges)
    s = np.linspace(0.0, 1.0, 9)
    ex = np.concatenate([xmin + (xmax - xmin) * s, np.full(9, xmax), xmax - (xmax - xmin) * s, np.full(9, xmin)])
    ey = np.concatenate([np.full(9, ymin), ymin + (ymax - ymin) * s, np.full(9, ymax), ymax - (ymax - ymin) * s])
    lon, lat, _ = scene.frame.to_geodetic(np.stack([ex, ey, np.zeros_like(ex)], axis=-1))
    x, y = Transformer.from_crs("EPSG:4326", scene.crs, always_xy=True).transform(lon, lat)
    x0, x1 = math.floor(np.min(x) / gsd) * gsd, math.ceil(np.max(x) / gsd) * gsd
    y0, y1 = math.floor(np.min(y) / gsd) * gsd, math.ceil(np.max(y) / gsd) * gsd
    width, height = int(round((x1 - x0) / gsd)), int(round((y1 - y0) / gsd))
    return GroundGrid(Affine(gsd, 0.0, x0, 0.0, -gsd, y1), width, height, scene.crs)


class ViewModel:
    """One view: its grey pixels normalised for matching, its colours for the points, and its camera model
    (`project(lon, lat, alt) -> (col, row)`: the RPC, or the pinhole fitted to it).

    `grid_gsd`: the ground grid's cell; when it is coarser than the view's pixels the matching image is blurred
    first (Gaussian, sigma = 0.5 sqrt(r^2 - 1) px for r = cell / pixel) so that sampling it does not alias."""

    def __init__(self, scene, name: str, projection: str, grid_gsd: float | None = None):
        self.scene, self.name, self.projection = scene, name, projection
        self.grid_gsd = grid_gsd
        self.rpc = scene.rpc(name)
        self.record = scene.view(name)
        self.pinhole_max_px: float | None = None
        self._camera = self._pinhole() if projection == "pinhole" else None

    def _pinhole(self):
        import json
        path = self.scene.camera_path(self.name)
        if path.exists():
            self.pinhole_max_px = json.loads(path.read_text()).get("max_px")
            return self.scene.camera(self.name)
        from earthsynth.geo.approx import approximate_rpc
        approx = approximate_rpc(self.rpc, self.scene.frame, self.record.width, self.record.height,
                                 self.scene.height_range)
        self.pinhole_max_px = approx.max_px
        return approx.camera

    @cached_property
    def pixels(self) -> np.ndarray:
        from earthsynth.io.raster import read_raster
        return read_raster(self.scene.image_path(self.name)).data

    @cached_property
    def matching_image(self) -> np.ndarray:
        """(H, W) float32 grey, centred on the median and scaled by the robust spread (1.4826 MAD)."""
        grey = self.pixels.astype(np.float32).mean(axis=0)
        ratio = (self.grid_gsd or 0.0) / self.record.gsd
        if ratio > 1.0:
            from scipy.ndimage import gaussian_filter
            grey = gaussian_filter(grey, 0.5 * math.sqrt(ratio * ratio - 1.0))
        median = float(np.median(grey))
        spread = 1.4826 * float(np.median(np.abs(grey - median)))
        if not spread > 0:
            spread = float(grey.std()) or 1.0
        return (grey - median) / spread

    @property
    def shape(self) -> tuple[int, int]:
        return self.matching_image.shape

    def project(self, lon, lat, alt) -> tuple[np.ndarray, np.ndarray]:
        lon, lat, alt = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (lon, lat, alt)))
        if self._camera is None:
            return self.rpc.projection(lon, lat, alt)
        enu = self.scene.frame.to_enu(lon, lat, alt)
        uv, _ = self._camera.project(enu)
        return uv[..., 0], uv[..., 1]

    def viewing_tangent(self) -> np.ndarray:
        """tan(zenith) * (east, north) unit vector towards the satellite, at the scene origin."""
        o = self.scene.frame
        zenith, azimuth = self.rpc.incidence(o.lon0, o.lat0, o.alt0)
        az = math.radians(float(azimuth))
        return math.tan(math.radians(float(zenith))) * np.array([math.sin(az), math.cos(az)])


def select_pairs(views: list[ViewModel], *, max_pairs: int, min_bh: float, max_bh: float,
                 target_bh: float) -> list[tuple[int, int, float]]:
    """(i, j, B/H) of up to `max_pairs` view pairs with min_bh <= B/H <= max_bh, closest to `target_bh` first."""
    tangents = [v.viewing_tangent() for v in views]
    candidates = []
    for i, j in combinations(range(len(views)), 2):
        bh = float(np.linalg.norm(tangents[i] - tangents[j]))
        if min_bh <= bh <= max_bh:
            candidates.append((abs(math.log(bh / target_bh)), i, j, bh))
    if not candidates:
        listing = ", ".join(f"{views[i].name}/{views[j].name}: {np.linalg.norm(tangents[i] - tangents[j]):.3f}"
                            for i, j in combinations(range(len(views)), 2))
        raise SceneError(f"no pair of views has a base-to-height ratio in [{min_bh}, {max_bh}] ({listing})",
                         path=views[0].scene.root / "scene.json",
                         hint="stereo needs views from different angles; add views or widen the B/H range")
    candidates.sort()
    return sorted((i, j, bh) for _, i, j, bh in candidates[:max_pairs])


@dataclass(frozen=True)
class HeightSweep:
    """Hypotheses h_d = low + d * step, d = 0..count-1; `t(h)` normalises heights to [-1, 1]."""

    low: float
    step: float
    count: int

    @property
    def high(self) -> float:
        return self.low + (self.count - 1) * self.step

    @property
    def heights(self) -> np.ndarray:
        return self.low + self.step * np.arange(self.count)

    def t(self, h):
        mid, half = 0.5 * (self.low + self.high), 0.5 * (self.high - self.low)
        return (np.asarray(h, np.float64) - mid) / half

    def to_dict(self) -> dict:
        return {"low_m": self.low, "high_m": self.high, "step_m": self.step, "count": self.count}


def plan_heights(height_range, gsd: float, max_bh: float, step_px: float, max_count: int) -> HeightSweep:
    """Hypotheses over `height_range` spaced `step_px` pixels of parallax on the widest pair (coarser if more
    than `max_count` would be needed)."""
    low, high = (float(v) for v in height_range)
    if not high > low:
        raise ConfigError(f"height range must be increasing, got {tuple(height_range)}")
    step = step_px * gsd / max_bh
    count = int(math.ceil((high - low) / step)) + 1
    if count > max_count:
        count = max_count
        step = (high - low) / (count - 1)
    return HeightSweep(low, step, max(count, 3))
