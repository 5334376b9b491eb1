"""Pinhole and orthographic cameras in the OpenCV convention.

World frame: local ENU metres, z up. Camera frame: x right, y down, z forward. `viewmat` is the 4x4
world-to-camera matrix (as gsplat takes it). Pixel (0, 0) is the centre of the top-left pixel, so pixel
(row i, col j) is sampled at u = j, v = i.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from earthsynth.errors import ConfigError


def look_at_viewmat(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """World-to-camera 4x4 for a camera at `eye` looking at `target` (OpenCV axes).

    When the view direction is (nearly) parallel to `up` (a nadir view), north (0, 1, 0) is used as
    "up" so that image rows still run north -> south.
    """
    eye = np.asarray(eye, float)
    forward = np.asarray(target, float) - eye
    norm = np.linalg.norm(forward)
    if norm == 0:
        raise ConfigError("look-at camera: eye and target coincide")
    forward /= norm
    up = np.asarray(up, float)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:
        right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    viewmat = np.eye(4)
    viewmat[:3, :3] = rotation
    viewmat[:3, 3] = -rotation @ eye
    return viewmat


def orbit_eye(target, elevation_deg: float, azimuth_deg: float, radius: float) -> np.ndarray:
    """Camera position on a sphere around `target`.

    Azimuth is measured clockwise from north (0 = camera north of the target, 90 = east), elevation
    from the horizon (90 = straight above)."""
    el, az = np.radians(elevation_deg), np.radians(azimuth_deg)
    offset = radius * np.array([np.cos(el) * np.sin(az), np.cos(el) * np.cos(az), np.sin(el)])
    return np.asarray(target, float) + offset


def intrinsics_from_fov(fov_x_deg: float, width: int, height: int) -> np.ndarray:
    fx = 0.5 * width / np.tan(0.5 * np.radians(fov_x_deg))
    return np.array([[fx, 0.0, (width - 1) / 2.0], [0.0, fx, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera: K (3x3), world-to-camera viewmat (4x4), image size in pixels."""

    K: np.ndarray
    viewmat: np.ndarray
    width: int
    height: int

    def __post_init__(self):
        object.__setattr__(self, "K", np.asarray(self.K, float).reshape(3, 3))
        object.__setattr__(self, "viewmat", np.asarray(self.viewmat, float).reshape(4, 4))
        if self.width <= 0 or self.height <= 0:
            raise ConfigError(f"camera size must be positive, got {self.width}x{self.height}")

    kind = "pinhole"

    @property
    def rotation(self) -> np.ndarray:
        return self.viewmat[:3, :3]

    @property
    def translation(self) -> np.ndarray:
        return self.viewmat[:3, 3]

    @property
    def center(self) -> np.ndarray:
        """Camera position in world coordinates."""
        return -self.rotation.T @ self.translation

    @property
    def projection_matrix(self) -> np.ndarray:
        """The 3x4 matrix P = K [R | t]."""
        return self.K @ self.viewmat[:3, :]

    def to_camera(self, points_n3) -> np.ndarray:
        p = np.asarray(points_n3, float)
        return p @ self.rotation.T + self.translation

    def project(self, points_n3) -> tuple[np.ndarray, np.ndarray]:
        """World points -> (uv_n2 pixel coordinates, depth_n along the optical axis)."""
        pc = self.to_camera(points_n3)
        z = pc[..., 2]
        uvw = pc @ self.K.T
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = uvw[..., :2] / uvw[..., 2:3]
        return uv, z

    def unproject(self, uv_n2, depth_n) -> np.ndarray:
        """Pixel coordinates and depth along the optical axis -> world points."""
        uv = np.asarray(uv_n2, float)
        depth = np.asarray(depth_n, float)
        ones = np.ones(uv.shape[:-1] + (1,))
        rays_cam = np.concatenate([uv, ones], axis=-1) @ np.linalg.inv(self.K).T
        pc = rays_cam * depth[..., None]
        return (pc - self.translation) @ self.rotation

    def pixel_grid(self) -> np.ndarray:
        """(H, W, 2) pixel-centre coordinates (u, v)."""
        v, u = np.mgrid[0 : self.height, 0 : self.width].astype(float)
        return np.stack([u, v], axis=-1)

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel ray origins (H, W, 3) and unit directions (H, W, 3) in world coordinates."""
        uv = self.pixel_grid()
        dirs_cam = np.concatenate([uv, np.ones(uv.shape[:-1] + (1,))], axis=-1) @ np.linalg.inv(self.K).T
        dirs = dirs_cam @ self.rotation
        dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
        origins = np.broadcast_to(self.center, dirs.shape).copy()
        return origins, dirs

    def resized(self, width: int, height: int) -> "Camera":
        """The same camera with another image size (pixel-centre convention kept)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0, 0] *= sx
        K[0, 1] *= sx
        K[1, 1] *= sy
        K[0, 2] = sx * (K[0, 2] + 0.5) - 0.5
        K[1, 2] = sy * (K[1, 2] + 0.5) - 0.5
        return Camera(K, self.viewmat.copy(), int(width), int(height))

    @classmethod
    def look_at(cls, eye, target, *, width: int, height: int, fov_x_deg: float | None = None,
                K=None, up=(0.0, 0.0, 1.0)) -> "Camera":
        if K is None:
            if fov_x_deg is None:
                raise ConfigError("look_at needs either K or fov_x_deg")
            K = intrinsics_from_fov(fov_x_deg, width, height)
        return cls(np.asarray(K, float), look_at_viewmat(eye, target, up), width, height)

    @classmethod
    def orbit(cls, look_at, *, elevation_deg: float, azimuth_deg: float, radius: float,
              width: int, height: int, fov_x_deg: float = 60.0) -> "Camera":
        """A camera on an orbit around `look_at`, looking at it (the Skyfall-GS curriculum cameras)."""
        eye = orbit_eye(look_at, elevation_deg, azimuth_deg, radius)
        return cls.look_at(eye, look_at, width=width, height=height, fov_x_deg=fov_x_deg)

    def to_dict(self) -> dict:
        return {"model": self.kind, "width": self.width, "height": self.height,
                "K": self.K.tolist(), "viewmat": self.viewmat.tolist()}


@dataclass(frozen=True, eq=False)
class OrthoCamera:
    """An orthographic camera: u = x_cam / gsd + cx, v = y_cam / gsd + cy, depth = z_cam.

    Used for top-down height maps (`top_down`) and sun shadow maps (`looking`)."""

    viewmat: np.ndarray
    gsd: float
    cx: float
    cy: float
    width: int
    height: int

    kind = "ortho"

    def __post_init__(self):
        object.__setattr__(self, "viewmat", np.asarray(self.viewmat, float).reshape(4, 4))
        if self.gsd <= 0:
            raise ConfigError(f"orthographic camera gsd must be positive, got {self.gsd}")

    @property
    def rotation(self) -> np.ndarray:
        return self.viewmat[:3, :3]

    @property
    def translation(self) -> np.ndarray:
        return self.viewmat[:3, 3]

    def to_camera(self, points_n3) -> np.ndarray:
        return np.asarray(points_n3, float) @ self.rotation.T + self.translation

    def project(self, points_n3) -> tuple[np.ndarray, np.ndarray]:
        pc = self.to_camera(points_n3)
        uv = np.stack([pc[..., 0] / self.gsd + self.cx, pc[..., 1] / self.gsd + self.cy], axis=-1)
        return uv, pc[..., 2]

    def unproject(self, uv_n2, depth_n) -> np.ndarray:
        uv = np.asarray(uv_n2, float)
        pc = np.stack([(uv[..., 0] - self.cx) * self.gsd, (uv[..., 1] - self.cy) * self.gsd,
                       np.asarray(depth_n, float)], axis=-1)
        return (pc - self.translation) @ self.rotation

    @classmethod
    def top_down(cls, x_min: float, y_max: float, gsd: float, width: int, height: int,
                 z_top: float = 10_000.0) -> "OrthoCamera":
        """Nadir camera whose pixel (row, col) centre is (x_min + (col + .5) gsd, y_max - (row + .5) gsd),
        exactly the pixel centres of the GeoTIFF transform `from_origin(x_min, y_max, gsd, gsd)`.
        Depth is z_top - z, so height = z_top - depth."""
        eye = np.array([x_min, y_max, z_top])
        viewmat = look_at_viewmat(eye, eye - np.array([0.0, 0.0, 1.0]))
        return cls(viewmat, float(gsd), -0.5, -0.5, int(width), int(height))

    @classmethod
    def looking(cls, direction, center, *, gsd: float, width: int, height: int,
                distance: float = 10_000.0) -> "OrthoCamera":
        """Camera looking along `direction` (world vector), image centre on `center` (e.g. for a sun shadow map)."""
        direction = np.asarray(direction, float) / np.linalg.norm(direction)
        eye = np.asarray(center, float) - distance * direction
        viewmat = look_at_viewmat(eye, center)
        return cls(viewmat, float(gsd), (width - 1) / 2.0, (height - 1) / 2.0, int(width), int(height))

    def to_dict(self) -> dict:
        return {"model": self.kind, "width": self.width, "height": self.height, "gsd": self.gsd,
                "cx": self.cx, "cy": self.cy, "viewmat": self.viewmat.tolist()}


def camera_from_dict(d: dict) -> Camera | OrthoCamera:
    model = d.get("model", "pinhole")
    if model == "pinhole":
        return Camera(np.array(d["K"]), np.array(d["viewmat"]), int(d["width"]), int(d["height"]))
    if model == "ortho":
        return OrthoCamera(np.array(d["viewmat"]), float(d["gsd"]), float(d["cx"]), float(d["cy"]),
                           int(d["width"]), int(d["height"]))
    raise ConfigError(f"unknown camera model {model!r} (expected 'pinhole' or 'ortho')")
