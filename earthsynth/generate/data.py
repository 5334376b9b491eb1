"""Training triples (HR crop, degraded LR condition, GSD in m/px) from a list of image sources.

A source delivers RGB crops at one or more ground sampling distances:

- `ImageSource`: a whole image in memory (loaded lazily by a function returning (rgb, true m/px)); crops at
  the native GSD and at `zoom_factors` times it (area-averaged), so one image gives several resolution levels;
- `raster_source`: an ImageSource reading a GeoTIFF (GSD from its transform, or a stated constant for images
  that only carry RPCs);
- `LandscapeSource`: the synthetic world's unbounded orthoimagery (`earthsynth.world.landscape`) at any GSD;
- `real_sources()`: the real rasters of ../shared/data/real, each tagged with its true m/px.

`TripletDataset.batch(seed, step, ...)` is a pure function of (seed, step, micro-batch, process): a resumed run
sees the same data, and each process of a multi-process run sees its own share.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.generate.degrade import DegradationConfig, degrade

REAL_DATA_ENV_HINT = "pass the folder explicitly (real_data_root=...) or place ../shared/data/real beside the repo"


def default_real_data_root() -> Path:
    """../shared/data/real next to the repository checkout."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"


def sample_seed(*keys: int) -> int:
    """A 63-bit seed that is a pure function of the integer keys (numpy SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0]) >> 1


def _randint(g: torch.Generator, n: int) -> int:
    return int(torch.randint(0, n, (), generator=g))


def _area_down(img_hwc: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return img_hwc
    h, w = img_hwc.shape[0] // factor, img_hwc.shape[1] // factor
    return img_hwc[: h * factor, : w * factor].reshape(h, factor, w, factor, -1).mean(axis=(1, 3))


def as_unit_rgb(pixels: np.ndarray, *, where: str = "image") -> np.ndarray:
    """(H, W, 3) or (H, W) uint8 / uint16 / float -> (H, W, 3) float32 in [0, 1].

    uint8 and float in [0, 1] are taken as they are; other ranges (e.g. 11-bit panchromatic in uint16) are
    stretched from their 1st to 99th percentile; one band is replicated to three."""
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ConfigError(f"{where}: expected an (H, W, 3) or (H, W) image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ConfigError(f"{where}: the image has NaN or infinite pixels")
    if arr.min() >= 0.0 and arr.max() <= 1.0:
        return arr
    lo, hi = np.percentile(arr, [1.0, 99.0])
    return np.clip((arr - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


# -------------------------------------------------------------------------------------------------------------
# sources
# -------------------------------------------------------------------------------------------------------------

class ImageSource:
    """One image (H, W, 3) with its true GSD, loaded on first use; crops at gsd * f for f in zoom_factors.

    `load()` returns (rgb, gsd_m) or (rgb, gsd_m, valid_hw): with a validity mask (False = nodata), crops are
    redrawn (up to `CROP_TRIES` times, deterministically) until at least `MIN_VALID_FRACTION` of them is valid."""

    CROP_TRIES = 8
    MIN_VALID_FRACTION = 0.95

    def __init__(self, name: str, load: Callable[[], tuple], *, zoom_factors: Sequence[int] = (1, 2, 4)):
        if not zoom_factors or any(int(f) != f or f < 1 for f in zoom_factors):
            raise ConfigError(f"source {name}: zoom_factors must be positive integers, got {zoom_factors}")
        self.name = name
        self.zoom_factors = tuple(int(f) for f in zoom_factors)
        self._load = load
        self._image: np.ndarray | None = None
        self._gsd_m: float | None = None
        self._valid_table: np.ndarray | None = None   # summed-area table of the validity mask

    def _ensure(self) -> None:
        if self._image is not None:
            return
        loaded = self._load()
        rgb, gsd_m = loaded[0], loaded[1]
        if not (isinstance(gsd_m, (int, float)) and math.isfinite(gsd_m) and gsd_m > 0):
            raise ConfigError(f"source {self.name}: its GSD must be a positive number of m/px, got {gsd_m!r}")
        self._image, self._gsd_m = as_unit_rgb(rgb, where=f"source {self.name}"), float(gsd_m)
        if len(loaded) > 2 and loaded[2] is not None:
            table = np.asarray(loaded[2], dtype=np.int64).cumsum(0).cumsum(1)
            self._valid_table = np.pad(table, ((1, 0), (1, 0)))

    def levels(self, crop_px: int) -> tuple[float, ...]:
        """The GSDs (m/px) this source can deliver a crop_px x crop_px crop at."""
        self._ensure()
        h, w = self._image.shape[:2]
        return tuple(self._gsd_m * f for f in self.zoom_factors if crop_px * f <= min(h, w))

    def _valid_fraction(self, row: int, col: int, size: int) -> float:
        if self._valid_table is None:
            return 1.0
        t = self._valid_table
        inside = t[row + size, col + size] - t[row, col + size] - t[row + size, col] + t[row, col]
        return float(inside) / (size * size)

    def crop(self, g: torch.Generator, crop_px: int, gsd_m: float) -> np.ndarray:
        """A random crop (crop_px, crop_px, 3) float32 at `gsd_m` (one of `levels`)."""
        self._ensure()
        factor = int(round(gsd_m / self._gsd_m))
        size = crop_px * factor
        h, w = self._image.shape[:2]
        best = (-1.0, 0, 0)
        for _ in range(self.CROP_TRIES):
            row, col = _randint(g, h - size + 1), _randint(g, w - size + 1)
            best = max(best, (self._valid_fraction(row, col, size), row, col))
            if best[0] >= self.MIN_VALID_FRACTION:
                break
        _, row, col = best
        return _area_down(self._image[row: row + size, col: col + size], factor).astype(np.float32)


class LandscapeSource:
    """The synthetic world's procedural orthoimagery, at any of `gsd_levels_m`, anywhere in +-extent_m."""

    def __init__(self, seed: int = 0, *, gsd_levels_m: Sequence[float] = (0.5, 2.0, 8.0, 32.0),
                 extent_m: float = 200_000.0, name: str = "landscape"):
        if not gsd_levels_m or any(not (g > 0) for g in gsd_levels_m):
            raise ConfigError(f"landscape gsd_levels_m must be positive m/px values, got {gsd_levels_m}")
        self.name, self.seed, self.extent_m = name, int(seed), float(extent_m)
        self.gsd_levels_m = tuple(float(g) for g in gsd_levels_m)

    def levels(self, crop_px: int) -> tuple[float, ...]:
        return self.gsd_levels_m

    def crop(self, g: torch.Generator, crop_px: int, gsd_m: float) -> np.ndarray:
        try:
            from earthsynth.world.landscape import landscape_tile
        except ImportError as exc:
            raise ConfigError(f"the landscape source needs earthsynth.world.landscape ({exc})",
                              hint="use real or function sources instead") from None
        x0 = (float(torch.rand((), generator=g, dtype=torch.float64)) * 2 - 1) * self.extent_m
        y0 = (float(torch.rand((), generator=g, dtype=torch.float64)) * 2 - 1) * self.extent_m
        rgb, _height = landscape_tile(self.seed, x0=x0, y0=y0, width_px=crop_px, height_px=crop_px, gsd=gsd_m)
        return as_unit_rgb(rgb, where=self.name)


def procedural_source(seed: int = 0, *, size_px: int = 256, gsd_m: float = 2.0,
                      zoom_factors: Sequence[int] = (1, 2, 4)) -> ImageSource:
    """A cheap smooth-noise RGB image (tests, smoke runs): no files, no world model."""
    def load() -> tuple[np.ndarray, float]:
        rng = np.random.default_rng(seed)
        img = np.zeros((size_px, size_px, 3), dtype=np.float32)
        for cells in (4, 16, 64):
            coarse = rng.random((cells, cells, 3), dtype=np.float32)
            rep = -(-size_px // cells)
            img += np.kron(coarse, np.ones((rep, rep, 1), dtype=np.float32))[:size_px, :size_px] / 3
        return img, gsd_m
    return ImageSource(f"procedural-{seed}", load, zoom_factors=zoom_factors)


# -------------------------------------------------------------------------------------------------------------
# real rasters
# -------------------------------------------------------------------------------------------------------------

def raster_gsd_m(path: str | Path) -> float:
    """Mean ground size of a pixel (m) from a raster's transform; geographic CRSs converted at its centre."""
    import rasterio
    from pyproj import CRS, Geod

    with rasterio.open(path) as src:
        t, crs, w, h = src.transform, src.crs, src.width, src.height
    if crs is None or t.is_identity:
        raise InputFileError("the raster has no geotransform, so its GSD is unknown", path=path,
                             hint="give the source a stated gsd_m (e.g. from the sensor's documentation)")
    cx, cy = t @ (w / 2, h / 2)
    crs = CRS.from_user_input(crs)
    if crs.is_geographic:
        geod = Geod(ellps="WGS84")
        dx = geod.inv(cx, cy, *(t @ (w / 2 + 1, h / 2)))[2]
        dy = geod.inv(cx, cy, *(t @ (w / 2, h / 2 + 1)))[2]
        return float(math.sqrt(dx * dy))
    unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    return float(math.sqrt(math.hypot(t.a, t.d) * math.hypot(t.b, t.e)) * unit)


def raster_source(path: str | Path, *, bands: Sequence[int] = (1, 2, 3), gsd_m: float | None = None,
                  name: str | None = None, zoom_factors: Sequence[int] = (1, 2, 4)) -> ImageSource:
    """An ImageSource reading `bands` (1-based, as R, G, B; one band is replicated) of a raster."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError("no such raster", path=path, hint=REAL_DATA_ENV_HINT)

    def load() -> tuple[np.ndarray, float]:
        from earthsynth.io.raster import read_raster
        raster = read_raster(path, bands=list(bands))
        valid_hw = None if raster.nodata is None else ~np.all(raster.data == raster.nodata, axis=0)
        pixels_hwb = np.moveaxis(raster.data, 0, -1)
        if pixels_hwb.shape[-1] == 1:
            pixels_hwb = pixels_hwb[..., 0]
        return pixels_hwb, (gsd_m if gsd_m is not None else raster_gsd_m(path)), valid_hw
    return ImageSource(name or path.stem, load, zoom_factors=zoom_factors)


@dataclass(frozen=True)
class RealDataset:
    """One real dataset of ../shared/data/real: files, bands used as RGB, and the GSD (None = from transform)."""

    folder: str
    pattern: str
    bands: tuple[int, ...]
    gsd_m: float | None
    note: str


REAL_DATASETS = {
    "naip": RealDataset("opengeos_naip_5m_timeseries", "*.tif", (1, 2, 3), None,
                        "NAIP aerial RGB(+NIR) resampled to 5 m; bands 1-3 = R, G, B"),
    "landsat": RealDataset("opengeos_landsat_pucallpa", "*.tif", (1, 2, 3), None,
                           "Landsat SWIR1, NIR, Red, Green; shown as the standard SWIR1-NIR-Red false colour "
                           "(vegetation green, bare soil magenta); stored at ~90 m in EPSG:4326"),
    "rasterio_rgb": RealDataset("rasterio_coarse", "RGB.byte.tif", (1, 2, 3), None, "Landsat-7 RGB at 300 m"),
    "jax": RealDataset("dfc2019_jax068", "JAX_068_001_RGB.tif", (1, 2, 3), 0.3,
                       "WorldView-3 pansharpened RGB, RPC only: stated GSD 0.3 m"),
    "pleiades": RealDataset("s2p_pair_reunion", "img_01.tif", (1,), 0.5,
                            "Pleiades-1B panchromatic, RPC only: stated GSD 0.5 m; one band replicated to RGB"),
}


def real_sources(root: str | Path | None = None, *, names: Sequence[str] = tuple(REAL_DATASETS),
                 zoom_factors: Sequence[int] = (1, 2, 4)) -> list[ImageSource]:
    """ImageSources for the real rasters (default: ../shared/data/real beside the repo)."""
    root = Path(root) if root is not None else default_real_data_root()
    if not root.is_dir():
        raise InputFileError("real data folder not found", path=root, hint=REAL_DATA_ENV_HINT)
    sources = []
    for name in names:
        if name not in REAL_DATASETS:
            raise ConfigError(f"unknown real dataset {name!r}", hint=f"choose from {sorted(REAL_DATASETS)}")
        spec = REAL_DATASETS[name]
        files = sorted((root / spec.folder).glob(spec.pattern))
        if not files:
            raise InputFileError(f"no {spec.pattern} files for the {name!r} dataset", path=root / spec.folder,
                                 hint=REAL_DATA_ENV_HINT)
        sources += [raster_source(f, bands=spec.bands, gsd_m=spec.gsd_m, name=f"{name}:{f.stem}",
                                  zoom_factors=zoom_factors) for f in files]
    return sources


# -------------------------------------------------------------------------------------------------------------
# the dataset
# -------------------------------------------------------------------------------------------------------------

class TripletDataset:
    """Deterministic batches of (hr, lr, resolution_m): sources and levels mixed within each batch."""

    def __init__(self, sources: Sequence, *, crop_px: int, scale: int = 4,
                 degradation: DegradationConfig = DegradationConfig()):
        if not sources:
            raise ConfigError("the training data needs at least one source")
        if crop_px < scale or crop_px % scale:
            raise ConfigError(f"crop_px {crop_px} must be a positive multiple of scale {scale}")
        self.sources, self.crop_px, self.scale, self.degradation = list(sources), crop_px, scale, degradation
        self._levels: list[tuple[float, ...]] | None = None

    def _source_levels(self) -> list[tuple[float, ...]]:
        if self._levels is None:
            self._levels = [tuple(s.levels(self.crop_px)) for s in self.sources]
            if not any(self._levels):
                raise ConfigError(f"no source can deliver a {self.crop_px} px crop",
                                  hint="use a smaller crop_px or larger images")
        return self._levels

    def item(self, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """One triple from one seed: (hr (3, H, W), lr (3, H/s, W/s)) in [0, 1] and the HR GSD (m/px)."""
        g = torch.Generator().manual_seed(seed)
        usable = [i for i, lv in enumerate(self._source_levels()) if lv]
        index = usable[_randint(g, len(usable))]
        levels = self._levels[index]
        gsd_m = levels[_randint(g, len(levels))]
        hr = torch.from_numpy(np.ascontiguousarray(self.sources[index].crop(g, self.crop_px, gsd_m)))
        hr = hr.permute(2, 0, 1).contiguous()
        lr = degrade(hr, scale=self.scale, generator=g, config=self.degradation)
        return hr, lr, float(gsd_m)

    def batch(self, seed: int, step: int, batch_size: int, *, micro: int = 0, rank: int = 0,
              device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Batch number `step` (micro-batch `micro`, process `rank`): hr (B,3,H,W), lr (B,3,h,w) in [0, 1],
        resolution_m (B,) float32 = GSD of hr. A pure function of its arguments."""
        items = [self.item(sample_seed(seed, step, micro, rank, i)) for i in range(batch_size)]
        device = device or "cpu"
        return {"hr": torch.stack([it[0] for it in items]).to(device),
                "lr": torch.stack([it[1] for it in items]).to(device),
                "resolution_m": torch.tensor([it[2] for it in items], dtype=torch.float32, device=device)}
