"""The RPC (rational polynomial camera) model: projection, localisation, (de)serialisation.

Conventions (project-wide):

- Image coordinates are (col, row), 0-based, with (0, 0) the CENTRE of the top-left pixel. This is
  the convention of the NITF RPC00B / GeoTIFF RPC tags as GDAL reads them ("RPCs are using the center
  of upper left pixel = 0,0 convention", gdal/alg/gdal_rpc.cpp). The readers in `rpc_readers*.py`
  convert every other file convention (e.g. the 1-based Pleiades DIMAP files) into this one, so an
  `RPCModel` never carries a convention flag.
- The four 20-term polynomials are stored in the RPC00B term order used by GDAL and TIFF tag 50844:
  1, L, P, H, LP, LH, PH, L², P², H², PLH, L³, LP², LH², L²P, P³, PH², L²H, P²H, H³
  with L = normalised longitude, P = normalised latitude, H = normalised height.
- Heights are metres above the WGS84 ellipsoid; lon/lat are degrees.

`read_rpc` / `find_rpc_for_image` live in `rpc_readers.py` and are re-exported here for convenience.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from earthsynth.errors import RPCFormatError

RPC00B_TERMS = ("1", "L", "P", "H", "LP", "LH", "PH", "L2", "P2", "H2",
                "PLH", "L3", "LP2", "LH2", "L2P", "P3", "PH2", "L2H", "P2H", "H3")

_WGS84_A = 6378137.0
_WGS84_E2 = 6.69437999014e-3


def polynomial_terms(x_lon, y_lat, z_alt) -> np.ndarray:
    """The 20 RPC00B monomials of normalised (lon, lat, height), stacked on a new first axis."""
    L, P, H = (np.asarray(v, dtype=np.float64) for v in (x_lon, y_lat, z_alt))
    return np.stack([
        np.ones_like(L), L, P, H, L * P, L * H, P * H, L * L, P * P, H * H,
        P * L * H, L ** 3, L * P * P, L * H * H, L * L * P, P ** 3, P * H * H, L * L * H, P * P * H, H ** 3,
    ])


def _polynomial_terms_derivatives(L, P, H) -> tuple[np.ndarray, np.ndarray]:
    """d(terms)/dL and d(terms)/dP, same layout as `polynomial_terms` (used by the Newton inverse)."""
    zero, one = np.zeros_like(L), np.ones_like(L)
    d_lon = np.stack([zero, one, zero, zero, P, H, zero, 2 * L, zero, zero,
                      P * H, 3 * L * L, P * P, H * H, 2 * L * P, zero, zero, 2 * L * H, zero, zero])
    d_lat = np.stack([zero, zero, one, zero, L, zero, H, zero, 2 * P, zero,
                      L * H, zero, 2 * L * P, zero, L * L, 3 * P * P, H * H, zero, 2 * P * H, zero])
    return d_lon, d_lat


def wrap_longitude_difference(d_lon):
    """Bring a longitude difference into [-180, 180] without rounding the common case: adding 180 and
    taking a modulo would cost ~3e-14° (~1e-8 px at 0.3 m GSD) on every value."""
    d_lon = np.asarray(d_lon, np.float64)
    return np.where(d_lon > 180.0, d_lon - 360.0, np.where(d_lon < -180.0, d_lon + 360.0, d_lon))


def _as_coefficients(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.shape != (20,):
        raise RPCFormatError(f"{name} has {array.size} coefficients, expected 20")
    if not np.all(np.isfinite(array)):
        raise RPCFormatError(f"{name} contains NaN or infinite coefficients")
    return array


@dataclass(frozen=True, eq=False)
class RPCModel:
    """An RPC camera in the normalised convention above (pixel centres, 0-based, RPC00B order).

    `width` / `height` are the image size in pixels when the source knows it (GeoTIFF, Sat-NeRF JSON,
    Maxar XML, DIMAP...), else None.
    """

    row_num: np.ndarray
    row_den: np.ndarray
    col_num: np.ndarray
    col_den: np.ndarray
    row_offset: float
    col_offset: float
    lat_offset: float
    lon_offset: float
    alt_offset: float
    row_scale: float
    col_scale: float
    lat_scale: float
    lon_scale: float
    alt_scale: float
    width: int | None = None
    height: int | None = None

    def __post_init__(self):
        for name in ("row_num", "row_den", "col_num", "col_den"):
            object.__setattr__(self, name, _as_coefficients(getattr(self, name), name))
        for name in ("row_offset", "col_offset", "lat_offset", "lon_offset", "alt_offset",
                     "row_scale", "col_scale", "lat_scale", "lon_scale", "alt_scale"):
            value = float(getattr(self, name))
            if not np.isfinite(value):
                raise RPCFormatError(f"{name} is NaN or infinite")
            if name.endswith("_scale") and value == 0.0:
                raise RPCFormatError(f"{name} is zero (the model would divide by zero)")
            object.__setattr__(self, name, value)
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, int(value))

    # ------------------------------------------------------------------ evaluation

    def _normalise_ground(self, lon, lat, alt):
        # Wrap the longitude difference so that scenes across the antimeridian work (as GDAL does).
        d_lon = wrap_longitude_difference(np.asarray(lon, np.float64) - self.lon_offset)
        return (d_lon / self.lon_scale,
                (np.asarray(lat, np.float64) - self.lat_offset) / self.lat_scale,
                (np.asarray(alt, np.float64) - self.alt_offset) / self.alt_scale)

    def _normalised_projection(self, L, P, H):
        terms = polynomial_terms(L, P, H)
        col_n = np.tensordot(self.col_num, terms, 1) / np.tensordot(self.col_den, terms, 1)
        row_n = np.tensordot(self.row_num, terms, 1) / np.tensordot(self.row_den, terms, 1)
        return col_n, row_n

    def projection(self, lon, lat, alt) -> tuple[np.ndarray, np.ndarray]:
        """Ground (lon°, lat°, metres above ellipsoid) -> image (col, row). Broadcasts; float64."""
        L, P, H = np.broadcast_arrays(*self._normalise_ground(lon, lat, alt))
        col_n, row_n = self._normalised_projection(L, P, H)
        return col_n * self.col_scale + self.col_offset, row_n * self.row_scale + self.row_offset

    def _newton_step(self, L, P, H, col_target_n, row_target_n):
        """One Newton update of normalised (L, P) towards the target; returns (L, P, residual_px)."""
        terms = polynomial_terms(L, P, H)
        d_lon, d_lat = _polynomial_terms_derivatives(L, P, H)
        jacobian = []
        residual = []
        for num, den, target in ((self.col_num, self.col_den, col_target_n),
                                 (self.row_num, self.row_den, row_target_n)):
            n, d = np.tensordot(num, terms, 1), np.tensordot(den, terms, 1)
            value = n / d
            # Quotient rule: (N/D)' = (N' - value * D') / D.
            jacobian.append(((np.tensordot(num, d_lon, 1) - value * np.tensordot(den, d_lon, 1)) / d,
                             (np.tensordot(num, d_lat, 1) - value * np.tensordot(den, d_lat, 1)) / d))
            residual.append(value - target)
        (a, b), (c, e) = jacobian
        r_col, r_row = residual
        det = a * e - b * c
        step_lon = (e * r_col - b * r_row) / det
        step_lat = (a * r_row - c * r_col) / det
        error_px = np.hypot(r_col * self.col_scale, r_row * self.row_scale)
        return L - step_lon, P - step_lat, error_px

    def localization(self, col, row, alt, *, max_iterations: int = 30,
                     tolerance_px: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
        """Image (col, row) at height `alt` -> ground (lon, lat), inverting `projection`.

        Newton's method on the normalised coordinates with the analytic Jacobian of the rational
        functions, started at the model's centre: RPCs are close to affine in normalised coordinates,
        so it converges in a handful of iterations to far below 1e-6 px reprojection error.
        """
        col_b, row_b, alt_b = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (col, row, alt)))
        col_target = (col_b - self.col_offset) / self.col_scale
        row_target = (row_b - self.row_offset) / self.row_scale
        H = (alt_b - self.alt_offset) / self.alt_scale
        L, P = np.zeros_like(H), np.zeros_like(H)
        with np.errstate(divide="ignore", invalid="ignore"):
            for _ in range(max_iterations):
                L, P, error_px = self._newton_step(L, P, H, col_target, row_target)
                if np.all(~np.isfinite(error_px) | (error_px < tolerance_px)):
                    break
            # The last step was computed from the previous residual: measure the final one.
            col_n, row_n = self._normalised_projection(L, P, H)
            error_px = np.hypot((col_n - col_target) * self.col_scale, (row_n - row_target) * self.row_scale)
        if np.any(error_px[np.isfinite(error_px)] > 1e-6):
            warnings.warn(f"RPC localization did not converge for some points "
                          f"(max reprojection error {np.nanmax(error_px):.3g} px)", RuntimeWarning, stacklevel=2)
        lon = wrap_longitude_difference(L * self.lon_scale + self.lon_offset)
        return lon, P * self.lat_scale + self.lat_offset

    # ------------------------------------------------------------------ geometry helpers

    @property
    def alt_range(self) -> tuple[float, float]:
        """The height interval the RPC was fitted on (offset ± scale)."""
        return self.alt_offset - abs(self.alt_scale), self.alt_offset + abs(self.alt_scale)

    def image_size(self, width: int | None = None, height: int | None = None) -> tuple[int, int]:
        """(width, height): the arguments, else the stored size, else 2 * offset + 1 (approximate:
        offsets are usually the image centre, but crop RPCs break that)."""
        w = width if width is not None else self.width
        h = height if height is not None else self.height
        w = w if w is not None else int(round(2 * self.col_offset + 1))
        h = h if h is not None else int(round(2 * self.row_offset + 1))
        return w, h

    def footprint(self, alt: float | None = None, *, width: int | None = None,
                  height: int | None = None) -> np.ndarray:
        """(4, 2) lon/lat of the outer image corners (top-left, top-right, bottom-right, bottom-left)
        at height `alt` (default: the RPC's height offset). Outer corners are at -0.5 and size - 0.5
        because pixel (0, 0) is the centre of the top-left pixel."""
        w, h = self.image_size(width, height)
        alt = self.alt_offset if alt is None else alt
        cols = np.array([-0.5, w - 0.5, w - 0.5, -0.5])
        rows = np.array([-0.5, -0.5, h - 0.5, h - 0.5])
        lon, lat = self.localization(cols, rows, alt)
        return np.stack([lon, lat], axis=-1)

    def incidence(self, lon, lat, alt) -> tuple[np.ndarray, np.ndarray]:
        """Viewing direction at a ground point: (zenith°, azimuth° clockwise from north), pointing
        from the ground to the satellite. Vectorised."""
        lon, lat, alt = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (lon, lat, alt)))
        col, row = self.projection(lon, lat, alt)
        rise_m = 0.1 * abs(self.alt_scale)
        lon_up, lat_up = self.localization(col, row, alt + rise_m)
        # Local east/north metres from the WGS84 radii of curvature (exact to first order).
        phi = np.radians(lat)
        w = np.sqrt(1.0 - _WGS84_E2 * np.sin(phi) ** 2)
        prime_vertical = _WGS84_A / w
        meridian = _WGS84_A * (1.0 - _WGS84_E2) / w ** 3
        d_lon = wrap_longitude_difference(lon_up - lon)
        east = np.radians(d_lon) * (prime_vertical + alt) * np.cos(phi)
        north = np.radians(lat_up - lat) * (meridian + alt)
        zenith = np.degrees(np.arctan2(np.hypot(east, north), rise_m))
        azimuth = np.degrees(np.arctan2(east, north)) % 360.0
        return zenith, azimuth

    def shifted(self, col_shift: float, row_shift: float) -> "RPCModel":
        """The RPC of a crop whose top-left pixel is (col_shift, row_shift) in this image."""
        d = self.to_dict()
        d["col_offset"] -= col_shift
        d["row_offset"] -= row_shift
        d["width"] = d["height"] = None
        return RPCModel.from_dict(d)

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict:
        """JSON-serialisable dict; the key names are those of rpcm / Sat-NeRF JSON (`row_offset`...)."""
        d = {name: float(getattr(self, name)) for name in (
            "row_offset", "col_offset", "lat_offset", "lon_offset", "alt_offset",
            "row_scale", "col_scale", "lat_scale", "lon_scale", "alt_scale")}
        for name in ("row_num", "row_den", "col_num", "col_den"):
            d[name] = [float(v) for v in getattr(self, name)]
        d["width"], d["height"] = self.width, self.height
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RPCModel":
        """Inverse of `to_dict`; also reads the `rpc` dict of Sat-NeRF / DFC2019 JSON files."""
        required = ("row_num", "row_den", "col_num", "col_den", "row_offset", "col_offset", "lat_offset",
                    "lon_offset", "alt_offset", "row_scale", "col_scale", "lat_scale", "lon_scale", "alt_scale")
        missing = [k for k in required if k not in d]
        if missing:
            raise RPCFormatError(f"RPC dict lacks the keys {missing}")
        return cls(**{k: d[k] for k in required}, width=d.get("width"), height=d.get("height"))

    def to_rasterio(self):
        """`rasterio.rpc.RPC` with the same coefficients. No pixel shift is needed: GDAL's RPC metadata
        uses our convention (pixel (0, 0) = centre of the top-left pixel)."""
        from rasterio.rpc import RPC

        return RPC(height_off=self.alt_offset, height_scale=self.alt_scale,
                   lat_off=self.lat_offset, lat_scale=self.lat_scale,
                   long_off=self.lon_offset, long_scale=self.lon_scale,
                   line_off=self.row_offset, line_scale=self.row_scale,
                   samp_off=self.col_offset, samp_scale=self.col_scale,
                   line_num_coeff=[float(v) for v in self.row_num], line_den_coeff=[float(v) for v in self.row_den],
                   samp_num_coeff=[float(v) for v in self.col_num], samp_den_coeff=[float(v) for v in self.col_den])

    @classmethod
    def from_rasterio(cls, rpc, *, width: int | None = None, height: int | None = None) -> "RPCModel":
        """From `rasterio.rpc.RPC` (e.g. `src.rpcs`)."""
        return cls(row_num=rpc.line_num_coeff, row_den=rpc.line_den_coeff,
                   col_num=rpc.samp_num_coeff, col_den=rpc.samp_den_coeff,
                   row_offset=rpc.line_off, col_offset=rpc.samp_off, lat_offset=rpc.lat_off,
                   lon_offset=rpc.long_off, alt_offset=rpc.height_off,
                   row_scale=rpc.line_scale, col_scale=rpc.samp_scale, lat_scale=rpc.lat_scale,
                   lon_scale=rpc.long_scale, alt_scale=rpc.height_scale, width=width, height=height)

    def __repr__(self) -> str:
        size = f"{self.width}x{self.height}" if self.width is not None else "size unknown"
        return (f"RPCModel(centre lon={self.lon_offset:.6f} lat={self.lat_offset:.6f} "
                f"alt={self.alt_offset:.1f}±{self.alt_scale:.1f} m, {size})")


# The readers import this module, so these two convenience entry points import them lazily.


def read_rpc(path, *, band: int | None = None) -> RPCModel:
    """Read an RPC from any supported file (see `earthsynth.geo.rpc_readers.read_rpc`)."""
    from earthsynth.geo.rpc_readers import read_rpc as _read_rpc

    return _read_rpc(path, band=band)


def find_rpc_for_image(tif_path):
    """(RPCModel, source path) of an image, from its tags or a sidecar (see `earthsynth.geo.rpc_readers`)."""
    from earthsynth.geo.rpc_readers import find_rpc_for_image as _find

    return _find(tif_path)
