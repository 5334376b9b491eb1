"""The scene's satellite views as (name, pinhole camera, RGB image): what the texture and splat stages fit."""

from __future__ import annotations

import numpy as np

from earthsynth.errors import SceneError


def view_rgb(scene, name: str) -> np.ndarray:
    """uint8 (H, W, 3) of a scene view: RGB kept as is, one band (panchromatic) repeated; non-uint8 data
    stretched between its 1st and 99th percentiles."""
    from earthsynth.io.raster import read_raster

    path = scene.image_path(name)
    data = read_raster(path).data
    bands = data[:3] if data.shape[0] >= 3 else np.repeat(data[:1], 3, axis=0)
    image = np.moveaxis(bands, 0, -1)
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        raise SceneError(f"view {name!r} has no finite pixels", path=path)
    lo, hi = np.percentile(finite, [1, 99])
    stretched = np.clip((np.nan_to_num(image, nan=lo) - lo) / max(hi - lo, 1e-9), 0, 1)
    return np.round(stretched * 255).astype(np.uint8)


def satellite_views(scene) -> list[tuple[str, object, np.ndarray]]:
    """(name, camera, uint8 image) of every view, the camera being the pinhole approximation in
    cameras/<view>.json."""
    views = []
    for record in scene.views:
        camera = scene.camera(record.name)
        image = view_rgb(scene, record.name)
        if image.shape[:2] != (camera.height, camera.width):
            raise SceneError(f"view {record.name!r} is {image.shape[1]}x{image.shape[0]} px but its camera is "
                             f"{camera.width}x{camera.height}", path=scene.camera_path(record.name),
                             hint=f"re-run `earthsynth cameras approx {scene.root}`")
        views.append((record.name, camera, image))
    return views
