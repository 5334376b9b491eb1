"""The low-resolution condition of a generation: an RGB image with its ground resolution and georeferencing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine

from earthsynth.errors import InputFileError
from earthsynth.generate.data import as_unit_rgb


@dataclass
class Condition:
    rgb_hw3: np.ndarray             # float32 in [0, 1]
    gsd_m: float | None             # from the raster's transform, when it has one
    transform: Affine | None = None
    crs: str | None = None


def load_condition(path: str | Path) -> Condition:
    """An RGB image (GeoTIFF: bands 1-3, or one band replicated; PNG / JPEG) with its georeferencing."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError("no such image", path=path, hint="check the path and the file name")
    if path.suffix.lower() in (".tif", ".tiff"):
        from earthsynth.io.raster import raster_info, read_raster
        info = raster_info(path)
        raster = read_raster(path, bands=[1, 2, 3] if info.count >= 3 else [1])
        pixels = np.moveaxis(raster.data, 0, -1)
        gsd = None
        if raster.transform is not None and raster.crs is not None:
            from earthsynth.generate.data import raster_gsd_m
            gsd = raster_gsd_m(path)
        return Condition(as_unit_rgb(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, where=str(path)),
                         gsd, raster.transform, raster.crs)
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputFileError(f"cannot be read as an image ({exc})", path=path,
                             hint="give a GeoTIFF, PNG or JPEG RGB image") from None
    return Condition(as_unit_rgb(rgb, where=str(path)), None)
