"""One texture atlas for the whole world: skyline packing of named regions, and a palette of flat colours.

Regions are pasted with `pad` texels of edge replication around them so bilinear lookups (and mip levels of a
viewer) near a region's border never pick up a neighbour's colours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from earthsynth.errors import ConfigError

_PATCH = 4            # texels per palette colour patch (its centre texel is what the UVs point at)
_PATCHES_PER_ROW = 16


@dataclass
class Palette:
    """Named flat colours (trunks, rooftop units, car paints, glass...) laid out as small patches."""

    names: list = field(default_factory=list)
    colours: list = field(default_factory=list)

    def add(self, name: str, rgb) -> str:
        if name not in self.names:
            self.names.append(name)
            self.colours.append(tuple(int(c) for c in rgb))
        return name

    def uv_texel(self, name: str) -> tuple[float, float]:
        """(col, row) texel coordinates of the patch centre, relative to the palette region."""
        k = self.names.index(name)
        return ((k % _PATCHES_PER_ROW) * _PATCH + _PATCH / 2, (k // _PATCHES_PER_ROW) * _PATCH + _PATCH / 2)

    def image(self) -> np.ndarray:
        rows = max(1, -(-len(self.names) // _PATCHES_PER_ROW))
        img = np.zeros((rows * _PATCH, _PATCHES_PER_ROW * _PATCH, 3), dtype=np.uint8)
        for k, rgb in enumerate(self.colours):
            r, c = (k // _PATCHES_PER_ROW) * _PATCH, (k % _PATCHES_PER_ROW) * _PATCH
            img[r:r + _PATCH, c:c + _PATCH] = rgb
        return img


def pack_skyline(sizes_hw: list[tuple[int, int]], width: int, pad: int) -> tuple[np.ndarray, int]:
    """Bottom-left skyline packing of rectangles (each grown by `pad` on every side) into a strip `width` wide.

    -> (origins_rc (n, 2) int: top-left texel of each *unpadded* rectangle, height used).
    """
    order = sorted(range(len(sizes_hw)), key=lambda k: (-sizes_hw[k][0], -sizes_hw[k][1]))
    seg_x, seg_w, seg_y = np.array([0]), np.array([width]), np.array([0])   # skyline segments
    origins = np.zeros((len(sizes_hw), 2), dtype=np.int64)
    for k in order:
        h, w = sizes_hw[k][0] + 2 * pad, sizes_hw[k][1] + 2 * pad
        if w > width:
            raise ConfigError(f"an atlas region {sizes_hw[k]} is wider than the atlas ({width} texels)",
                              hint="use a coarser ground texel size or a smaller world")
        best = None
        for i in range(len(seg_x)):
            x = int(seg_x[i])
            if x + w > width:
                break
            j = int(np.searchsorted(seg_x, x + w, side="left"))
            y = int(seg_y[i:j].max())
            if best is None or (y + h, x) < best[0]:
                best = ((y + h, x), x, y)
        _, x, y = best
        origins[k] = (y + pad, x + pad)
        seg_x, seg_w, seg_y = _raise_skyline(seg_x, seg_w, seg_y, x, w, y + h)
    height = int((seg_y).max()) if len(sizes_hw) else 0
    return origins, height


def _raise_skyline(seg_x, seg_w, seg_y, x, w, top):
    """Replace the skyline over [x, x + w) by one segment at height `top`, keeping the rest."""
    new_x, new_w, new_y = [x], [w], [top]
    for sx, sw, sy in zip(seg_x, seg_w, seg_y):
        end = sx + sw
        if sx < x:                                  # the part left of the new segment survives
            new_x.append(sx), new_w.append(min(end, x) - sx), new_y.append(sy)
        if end > x + w:                             # and the part right of it
            start = max(sx, x + w)
            new_x.append(start), new_w.append(end - start), new_y.append(sy)
    order = np.argsort(new_x, kind="stable")
    seg_x, seg_w, seg_y = np.asarray(new_x)[order], np.asarray(new_w)[order], np.asarray(new_y)[order]
    # Merge neighbours of equal height so the candidate list stays short.
    merged_x, merged_w, merged_y = [seg_x[0]], [seg_w[0]], [seg_y[0]]
    for sx, sw, sy in zip(seg_x[1:], seg_w[1:], seg_y[1:]):
        if sy == merged_y[-1]:
            merged_w[-1] += sw
        else:
            merged_x.append(sx), merged_w.append(sw), merged_y.append(sy)
    return np.asarray(merged_x), np.asarray(merged_w), np.asarray(merged_y)


def plan_atlas(sizes: dict, *, pad: int, max_size: int = 4096, preferred_size: int = 2048):
    """Place named regions {name: (h, w)} -> ({name: (row, col)}, (atlas_h, atlas_w)), or None if too big.

    Tries a `preferred_size` wide atlas first, then wider ones up to `max_size`; the height is the width or
    half of it, whichever holds the packing.
    """
    names = list(sizes)
    width = preferred_size
    while width <= max_size:
        origins, used = pack_skyline([sizes[n] for n in names], width, pad)
        if used <= width:
            height = width // 2 if used <= width // 2 else width
            return {n: tuple(int(v) for v in o) for n, o in zip(names, origins)}, (height, width)
        width *= 2
    return None


def compose_atlas(images: dict, origins: dict, atlas_hw: tuple[int, int], *, pad: int,
                  background=(96, 96, 96)) -> np.ndarray:
    """Paste each region image at its origin with `pad` texels of edge replication -> (H, W, 3) uint8."""
    atlas = np.empty((*atlas_hw, 3), dtype=np.uint8)
    atlas[:] = background
    for name, img in images.items():
        r, c = origins[name]
        padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        atlas[r - pad:r - pad + padded.shape[0], c - pad:c - pad + padded.shape[1]] = padded
    return atlas
