"""MetaEarth's seam metric: mean absolute gradient across tile seams, against the same statistic inside tiles.

MetaEarth measures the continuity of tiled generation as "the absolute directional gradient values of adjacent
pixels at the seams", averaged (smaller is better). The raw value depends on the content (a busy city has large
gradients everywhere), so `seam_ratio` also computes the same statistic away from the seams and reports their
ratio: ~1 when the seams cannot be told from the rest of the image, >> 1 when the tiling shows.

Directional: across a vertical seam line (between columns b - 1 and b) the gradient is |I[:, b] - I[:, b - 1]|;
across a horizontal one, |I[b, :] - I[b - 1, :]|. The interior statistic uses the same direction at every
position that is not a seam. Each of `seam` and `interior` is the mean of its two per-direction means, so a
linear ramp has a ratio of exactly 1 for any image shape.
"""

from __future__ import annotations

import numpy as np

from earthsynth.errors import ConfigError


def seam_lines(size: int, tile_size: int, offset: int = 0) -> np.ndarray:
    """Indices b (0 < b < size) where a tile starts: the seam lies between b - 1 and b."""
    if not isinstance(tile_size, (int, np.integer)) or tile_size < 2:
        raise ConfigError(f"tile_size must be an integer >= 2 px, got {tile_size!r}")
    starts = np.arange(offset % tile_size, size, tile_size)
    return starts[(starts > 0) & (starts < size)]


def _as_hwc(image) -> np.ndarray:
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or min(arr.shape[:2]) < 2:
        raise ConfigError(f"seam_ratio needs an (H, W) or (H, W, C) image of at least 2x2 px, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ConfigError("seam_ratio: the image has NaN or infinite pixels")
    return arr


def _direction(diffs: np.ndarray, seams: np.ndarray) -> tuple[float | None, float | None]:
    """(seam mean, interior mean) of |differences| along axis 0 of `diffs` (index b - 1 = across seam b)."""
    is_seam = np.zeros(diffs.shape[0], dtype=bool)
    is_seam[seams - 1] = True
    seam = float(diffs[is_seam].mean()) if is_seam.any() else None
    interior = float(diffs[~is_seam].mean()) if (~is_seam).any() else None
    return seam, interior


def seam_ratio(image, tile_size: int, *, offset: int = 0, tile_size_y: int | None = None,
               offset_y: int | None = None) -> dict:
    """Seam statistic of an (H, W) or (H, W, C) image tiled every `tile_size` px (rows: `tile_size_y`,
    default the same), the first seam at `offset` (mod tile_size).

    Returns {"seam", "interior", "ratio", "seam_x", "seam_y", "interior_x", "interior_y"} (per-direction values
    are None where the image has no seam in that direction); ratio = seam / interior (1.0 if both are 0)."""
    arr = _as_hwc(image)
    h, w = arr.shape[:2]
    ty = tile_size if tile_size_y is None else tile_size_y
    oy = offset if offset_y is None else offset_y
    cols, rows = seam_lines(w, tile_size, offset), seam_lines(h, ty, oy)
    if cols.size == 0 and rows.size == 0:
        raise ConfigError(f"a {w}x{h} px image tiled every {tile_size}x{ty} px has no seam to measure",
                          hint="give an image larger than one tile")
    dx = np.abs(np.diff(arr, axis=1)).mean(axis=2)    # (H, W - 1): across vertical lines
    dy = np.abs(np.diff(arr, axis=0)).mean(axis=2)    # (H - 1, W): across horizontal lines
    seam_x, interior_x = _direction(dx.T, cols) if cols.size else (None, None)
    seam_y, interior_y = _direction(dy, rows) if rows.size else (None, None)
    seams = [v for v in (seam_x, seam_y) if v is not None]
    interiors = [v for v, s in ((interior_x, seam_x), (interior_y, seam_y)) if s is not None and v is not None]
    seam = float(np.mean(seams))
    interior = float(np.mean(interiors)) if interiors else 0.0
    if interior == 0.0:
        ratio = 1.0 if seam == 0.0 else float("inf")
    else:
        ratio = seam / interior
    return {"seam": seam, "interior": interior, "ratio": ratio, "seam_x": seam_x, "seam_y": seam_y,
            "interior_x": interior_x, "interior_y": interior_y}
