"""lon/lat/alt (WGS84, ellipsoidal height) <-> local ENU metres around a scene origin.

The transform goes through ECEF with pyproj (exact, no flat-earth approximation), then the standard
ECEF -> ENU rotation at the origin.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pyproj import Transformer


@lru_cache(maxsize=1)
def _geodetic_to_ecef() -> Transformer:
    return Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)


def geodetic_to_ecef(lon, lat, alt) -> np.ndarray:
    """(…,) lon, lat in degrees, alt in metres above the WGS84 ellipsoid -> (…, 3) ECEF metres."""
    x, y, z = _geodetic_to_ecef().transform(np.asarray(lon, float), np.asarray(lat, float), np.asarray(alt, float))
    return np.stack([x, y, z], axis=-1)


def ecef_to_geodetic(xyz) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xyz = np.asarray(xyz, float)
    lon, lat, alt = _geodetic_to_ecef().transform(
        xyz[..., 0], xyz[..., 1], xyz[..., 2], direction="INVERSE"
    )
    return np.asarray(lon), np.asarray(lat), np.asarray(alt)


@dataclass(frozen=True)
class ENUFrame:
    """A local east-north-up frame in metres, origin at (lon0, lat0, alt0)."""

    lon0: float
    lat0: float
    alt0: float = 0.0

    @property
    def rotation_ecef_to_enu(self) -> np.ndarray:
        lam, phi = np.radians(self.lon0), np.radians(self.lat0)
        sl, cl, sp, cp = np.sin(lam), np.cos(lam), np.sin(phi), np.cos(phi)
        return np.array(
            [
                [-sl, cl, 0.0],
                [-sp * cl, -sp * sl, cp],
                [cp * cl, cp * sl, sp],
            ]
        )

    @property
    def origin_ecef(self) -> np.ndarray:
        return geodetic_to_ecef(self.lon0, self.lat0, self.alt0)

    def to_enu(self, lon, lat, alt) -> np.ndarray:
        """-> (…, 3) east, north, up metres."""
        d = geodetic_to_ecef(lon, lat, alt) - self.origin_ecef
        return d @ self.rotation_ecef_to_enu.T

    def to_geodetic(self, enu) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(…, 3) ENU metres -> lon, lat (degrees), alt (m)."""
        ecef = np.asarray(enu, float) @ self.rotation_ecef_to_enu + self.origin_ecef
        return ecef_to_geodetic(ecef)

    def to_dict(self) -> dict:
        return {"lon": self.lon0, "lat": self.lat0, "alt": self.alt0}

    @classmethod
    def from_dict(cls, d: dict) -> "ENUFrame":
        return cls(float(d["lon"]), float(d["lat"]), float(d.get("alt", 0.0)))
