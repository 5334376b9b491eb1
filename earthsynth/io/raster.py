"""GeoTIFF / Cloud Optimised GeoTIFF read and write (rasterio), windowed and streamed.

Arrays are (bands, H, W). `transform` is rasterio's affine, which maps the top-left CORNER of a pixel;
the project convention names pixel (0, 0) by its CENTRE, so use `pixel_centers` rather than `transform @ (c, r)`.
A raster without georeferencing (e.g. a satellite view that carries only RPCs) has `transform=None, crs=None`.
Every write is atomic (temporary name, then rename); COGs are made by GDAL's COG driver from a tiled GeoTIFF.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.rpc import RPC
from rasterio.windows import Window

from earthsynth.errors import ConfigError, InputFileError, SceneError
from earthsynth.io.atomic import atomic_path, temp_sibling

# GDAL's block cache defaults to 5 % of RAM; bounded while streaming so memory use does not grow with the machine.
_STREAM_CACHE_MB = 64


@dataclass
class Raster:
    """Pixels and georeferencing of one raster file."""

    data: np.ndarray                           # (bands, H, W)
    transform: Affine | None = None            # top-left corner convention (rasterio's); None = not georeferenced
    crs: str | None = None                     # "EPSG:32740" when it has an EPSG code, else WKT
    nodata: float | None = None
    rpc: Any | None = None                     # earthsynth.geo.rpc.RPCModel (to_rasterio / from_rasterio)
    tags: dict = field(default_factory=dict)   # GDAL default-domain metadata
    band_descriptions: tuple = ()              # one (str or None) per band

    @property
    def count(self) -> int:
        return int(self.data.shape[0])

    @property
    def height(self) -> int:
        return int(self.data.shape[1])

    @property
    def width(self) -> int:
        return int(self.data.shape[2])


@dataclass(frozen=True)
class RasterInfo:
    """What `raster_info` learns from a file's header, without reading pixels."""

    width: int
    height: int
    count: int
    dtype: str
    crs: str | None
    transform: Affine | None
    nodata: float | None
    has_rpc: bool
    driver: str
    tiled: bool
    block_shape: tuple[int, int]               # (rows, cols) of band 1's blocks
    overview_factors: tuple[int, ...]          # band 1's overview decimation factors
    layout: str | None                         # "COG" when GDAL recognises a cloud optimised layout
    compression: str | None


def _open_error(path: Path, exc: Exception) -> InputFileError:
    return InputFileError(f"cannot be read as a GeoTIFF ({exc})", path=path,
                          hint="check that the file is a complete GeoTIFF (a truncated or interrupted "
                               "download gives this error); download or copy it again")


def _open_for_reading(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise InputFileError("no such file", path=path, hint="check the path and the file name")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioError as exc:
        raise _open_error(path, exc) from None


def _georeferencing(src) -> tuple[Affine | None, str | None]:
    crs = src.crs.to_string() if src.crs else None
    transform = src.transform
    if crs is None and transform.is_identity:   # rasterio's stand-in for "no geotransform"
        transform = None
    return transform, crs


def _rpc_from_rasterio(rpcs, src, window: Window | None):
    """The project's RPCModel for the pixels read: a window's RPC has its offsets moved to the window."""
    if rpcs is None:
        return None
    from earthsynth.geo.rpc import RPCModel  # lazy: plain rasters do not need the RPC machinery

    rpc = RPCModel.from_rasterio(rpcs, width=src.width, height=src.height)
    if window is None:
        return rpc
    shifted = rpc.shifted(col_shift=window.col_off, row_shift=window.row_off).to_dict()
    shifted["width"], shifted["height"] = int(window.width), int(window.height)
    return RPCModel.from_dict(shifted)


def _rpc_to_rasterio(rpc):
    if rpc is None or isinstance(rpc, RPC):
        return rpc
    if hasattr(rpc, "to_rasterio"):
        return rpc.to_rasterio()
    raise ConfigError(f"rpc must be an RPCModel or rasterio.rpc.RPC, got {type(rpc).__name__}")


def raster_info(path: str | Path) -> RasterInfo:
    """Size, bands, dtype, georeferencing, RPC presence and tiling of a raster, without reading pixels."""
    with _open_for_reading(path) as src:
        transform, crs = _georeferencing(src)
        structure = src.tags(ns="IMAGE_STRUCTURE")
        return RasterInfo(
            width=src.width, height=src.height, count=src.count, dtype=src.dtypes[0], crs=crs,
            transform=transform, nodata=src.nodata, has_rpc=src.rpcs is not None, driver=src.driver,
            tiled=bool(src.profile.get("tiled", False)), block_shape=tuple(src.block_shapes[0]),
            overview_factors=tuple(src.overviews(1)), layout=structure.get("LAYOUT"),
            compression=structure.get("COMPRESSION"))


def _as_window(window, path: Path, height: int, width: int) -> Window | None:
    if window is None:
        return None
    if not isinstance(window, Window):
        (row_start, row_stop), (col_start, col_stop) = window
        window = Window.from_slices((row_start, row_stop), (col_start, col_stop))
    inside = (window.row_off >= 0 and window.col_off >= 0 and window.height > 0 and window.width > 0
              and window.row_off + window.height <= height and window.col_off + window.width <= width)
    if not inside:
        raise ConfigError(f"window {window} is not inside the {width}x{height} image {path}")
    return window


def read_raster(path: str | Path, *, window=None, bands=None) -> Raster:
    """Read a raster (or a window of it) with its georeferencing, RPCs, tags and band descriptions.

    window: rasterio `Window` or ((row_start, row_stop), (col_start, col_stop)); the returned transform is
    the window's, and so is the RPC (offsets moved so that pixel (0, 0) is the window's top-left pixel).
    bands: band numbers counted from 1 as GDAL does (default: all)."""
    path = Path(path)
    with _open_for_reading(path) as src:
        window = _as_window(window, path, src.height, src.width)
        band_numbers = list(range(1, src.count + 1)) if bands is None else [int(b) for b in bands]
        if not band_numbers or min(band_numbers) < 1 or max(band_numbers) > src.count:
            raise ConfigError(f"bands {bands} out of range 1..{src.count} for {path}")
        try:
            data = src.read(band_numbers, window=window)
        except RasterioError as exc:
            raise _open_error(path, exc) from None
        transform, crs = _georeferencing(src)
        if transform is not None and window is not None:
            transform = src.window_transform(window)
        return Raster(data=data, transform=transform, crs=crs, nodata=src.nodata,
                      rpc=_rpc_from_rasterio(src.rpcs, src, window), tags=dict(src.tags()),
                      band_descriptions=tuple(src.descriptions[b - 1] for b in band_numbers))


def _as_chw(data) -> np.ndarray:
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3 or 0 in data.shape:
        raise ConfigError(f"raster data must be (H, W) or (bands, H, W), got shape {data.shape}")
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    elif data.dtype == np.float16:            # GeoTIFF via rasterio has no float16; float32 holds it exactly
        data = data.astype(np.float32)
    return data


def _check_block(block: int) -> None:
    if block < 16 or block % 16:
        raise ConfigError(f"block (tile size) must be a positive multiple of 16, got {block}")


def _gtiff_options(dtype, compress: str | None, block: int) -> dict:
    options = {"tiled": True, "blockxsize": block, "blockysize": block, "BIGTIFF": "IF_SAFER"}
    if compress:
        options["compress"] = compress
        if compress.lower() in ("deflate", "lzw", "zstd"):
            options["predictor"] = 3 if np.dtype(dtype).kind == "f" else 2
    return options


def _convert_to_cog(gtiff_path: Path, cog_path: Path, *, compress: str | None, block: int,
                    overview_resampling: str) -> None:
    """Copy a tiled GeoTIFF to a COG (tiles, overviews, header first) with GDAL's COG driver."""
    options = {"BLOCKSIZE": block, "BIGTIFF": "IF_SAFER", "OVERVIEW_RESAMPLING": overview_resampling.upper(),
               "COMPRESS": (compress or "NONE").upper()}
    if compress and compress.lower() in ("deflate", "lzw", "zstd"):
        options["PREDICTOR"] = "YES"           # the COG driver picks 2 or 3 from the data type
    with rasterio.Env(GDAL_CACHEMAX=_STREAM_CACHE_MB):
        rasterio.shutil.copy(gtiff_path, cog_path, driver="COG", **options)


def _write_metadata(dst, *, tags, band_descriptions) -> None:
    if tags:
        dst.update_tags(**{str(k): str(v) for k, v in tags.items()})
    for band, description in enumerate(band_descriptions or (), start=1):
        if description:
            dst.set_band_description(band, str(description))


def write_raster(path: str | Path, data, *, transform=None, crs=None, nodata=None, rpc=None, tags=None,
                 band_descriptions=None, cog: bool = False, compress: str | None = "deflate", block: int = 512,
                 overview_resampling: str = "average") -> Path:
    """Write (bands, H, W) or (H, W) `data` to a GeoTIFF, or a Cloud Optimised GeoTIFF if `cog`. Atomic.

    transform: rasterio affine (top-left corner convention); crs: anything rasterio's CRS accepts;
    rpc: an RPCModel (or rasterio RPC) written as GDAL RPC tags. Returns the final path."""
    data = _as_chw(data)
    _check_block(block)
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype, "nodata": nodata, "crs": CRS.from_user_input(crs) if crs else None,
               "transform": transform, "rpcs": _rpc_to_rasterio(rpc)}
    if transform is None:
        del profile["transform"]
    profile.update(_gtiff_options(data.dtype, None if cog else compress, block))
    with atomic_path(path) as tmp_final:
        gtiff_path = temp_sibling(tmp_final) if cog else tmp_final
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(gtiff_path, "w", **profile) as dst:
                    dst.write(data)
                    _write_metadata(dst, tags=tags, band_descriptions=band_descriptions)
            if cog:
                _convert_to_cog(gtiff_path, tmp_final, compress=compress, block=block,
                                overview_resampling=overview_resampling)
        finally:
            if cog and gtiff_path.exists():
                gtiff_path.unlink()
    return Path(path)


class StreamingRasterWriter:
    """Write a raster larger than memory window by window; on close it becomes a COG (if `cog`) atomically.

        with StreamingRasterWriter("tiles.tif", W, H, 3, "uint8", transform=t, crs="EPSG:32633") as out:
            out.write_window(row_off, col_off, tile_chw)

    Pixels never written hold `nodata` (or 0). An exception inside the `with` leaves no file behind."""

    def __init__(self, path, width: int, height: int, count: int, dtype, *, transform=None, crs=None,
                 nodata=None, block: int = 512, cog: bool = True, compress: str | None = "deflate",
                 tags=None, band_descriptions=None, overview_resampling: str = "average"):
        if min(width, height, count) <= 0:
            raise ConfigError(f"raster size must be positive, got {width}x{height}x{count}")
        _check_block(block)
        self.path = Path(path)
        self.width, self.height, self.count = int(width), int(height), int(count)
        self.dtype = np.dtype(dtype)
        self.cog, self.compress, self.block = cog, compress, block
        self.overview_resampling = overview_resampling
        self._profile = {"driver": "GTiff", "width": self.width, "height": self.height, "count": self.count,
                         "dtype": self.dtype, "nodata": nodata, "crs": CRS.from_user_input(crs) if crs else None,
                         **({"transform": transform} if transform is not None else {}),
                         **_gtiff_options(self.dtype, compress, block)}
        self._metadata = {"tags": tags, "band_descriptions": band_descriptions}
        self._atomic = None
        self._dataset = None
        self._env = None

    def __enter__(self) -> "StreamingRasterWriter":
        self._atomic = atomic_path(self.path)
        self._tmp_final = self._atomic.__enter__()
        self._gtiff_path = temp_sibling(self._tmp_final) if self.cog else self._tmp_final
        try:
            self._env = rasterio.Env(GDAL_CACHEMAX=_STREAM_CACHE_MB)
            self._env.__enter__()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._dataset = rasterio.open(self._gtiff_path, "w", **self._profile)
        except BaseException as exc:
            self._abort(exc)
            raise
        return self

    def write_window(self, row_off: int, col_off: int, data_chw) -> None:
        """Write (bands, h, w) (or (h, w) for one band) pixels with their top-left pixel at (row_off, col_off)."""
        if self._dataset is None:
            raise ConfigError("StreamingRasterWriter.write_window called outside its `with` block")
        data = np.asarray(data_chw)
        data = data[None] if data.ndim == 2 else data
        if data.ndim != 3 or data.shape[0] != self.count:
            raise ConfigError(f"window data must be ({self.count}, h, w), got shape {data.shape}")
        h, w = data.shape[1:]
        if row_off < 0 or col_off < 0 or row_off + h > self.height or col_off + w > self.width:
            raise ConfigError(f"window rows {row_off}..{row_off + h}, cols {col_off}..{col_off + w} "
                              f"outside the {self.width}x{self.height} raster {self.path}")
        if not np.can_cast(data.dtype, self.dtype, casting="same_kind"):
            raise ConfigError(f"window data of type {data.dtype} cannot be stored as {self.dtype} without "
                              f"clamping; convert it explicitly first")
        self._dataset.write(data.astype(self.dtype, copy=False), window=Window(col_off, row_off, w, h))

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self._abort(exc)
            return False
        try:
            _write_metadata(self._dataset, **self._metadata)
            self._dataset.close()
            self._dataset = None
            if self.cog:
                _convert_to_cog(self._gtiff_path, self._tmp_final, compress=self.compress, block=self.block,
                                overview_resampling=self.overview_resampling)
                self._gtiff_path.unlink()
        except BaseException as error:
            self._abort(error)
            raise
        self._close_env()
        self._atomic.__exit__(None, None, None)     # renames the finished file into place
        return False

    def _abort(self, exc: BaseException) -> None:
        """Close and delete everything written so far, then let `exc` propagate."""
        if self._dataset is not None:
            try:
                self._dataset.close()
            except RasterioError:
                pass
            self._dataset = None
        if self.cog and self._gtiff_path.exists():
            self._gtiff_path.unlink()
        self._close_env()
        try:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
        except BaseException:
            pass                                     # the atomic context re-raises `exc`; the caller does too

    def _close_env(self) -> None:
        if self._env is not None:
            self._env.__exit__(None, None, None)
            self._env = None


def pixel_centers(transform: Affine, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(x_hw, y_hw) map coordinates of every pixel centre: pixel (r, c) is at transform @ (c + .5, r + .5)."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    cols += 0.5
    rows += 0.5
    x = transform.a * cols + transform.b * rows + transform.c
    y = transform.d * cols + transform.e * rows + transform.f
    return x, y


def gsd_of(transform: Affine) -> tuple[float, float]:
    """(gsd_x, gsd_y): ground size of one pixel along columns and along rows, in CRS units (positive)."""
    return float(np.hypot(transform.a, transform.d)), float(np.hypot(transform.b, transform.e))


def check_finite(data, path: str | Path | None = None, *, error=SceneError, what: str = "pixels") -> None:
    """Raise `error` (SceneError by default, or InputFileError) if `data` holds NaN or infinite values.

    For callers that cannot use such pixels; the message gives the count and the first one (band, row, col)."""
    data = np.asarray(data)
    if data.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(data)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    raise error(f"{n_bad} of {data.size} {what} are NaN or infinite (first at index {first})", path=path,
                hint="fill or mask them first (e.g. give the raster a nodata value and fill the holes), "
                     "or use a tool that accepts missing values")
