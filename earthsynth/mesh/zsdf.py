"""The Z-monotonic SDF of Orbit to Ground (paper 003, Sec. 3.1 and App. B.2): a 2.5D city as a learnable 2D grid.

Domain and units. Everything is in the normalised cube [-1, 1]^3 of one scene division: x, y span the grid,
heights (and z) are in the same normalised units. Grid node (row i, col j) of an (H, W) grid sits at the pixel
centre x_j = -1 + (j + 1/2) 2/W, y_i = -1 + (i + 1/2) 2/H: columns follow x, ROWS FOLLOW INCREASING y (the
paper's (A1) index v = floor((y + 1) R / 2)). A north-up raster (row 0 = north = largest y) must be flipped,
`height_hw.flip(0)`, before `init_from_heightmap`.

The field. For a query (x, y, z) let (i0, j0) be the nearest grid node and N the 3 x 3 nodes around it
(nodes outside the grid are dropped). Then

    s(x, y, z) = sum_{j in N} w_j tanh(k (z - h_j)),      k = 80 (paper),

with h_j the node's height offset (measured from z = 0) and the weights a windowed softmax of inverse
distance, distances d_j in grid cells:

    w_j ∝ c(dx_j) c(dy_j) exp(1 / (tau * sqrt(d_j^2 + eps^2))),   c(t) = smoothstep(clamp(1.5 - |t|, 0, 1)),

normalised to sum to one. tau (default 1 cell) is the softmax temperature. The window c is 1 for the nearest
node's row and column (|t| <= 1/2) and falls to 0 at |t| = 1.5 cells, exactly where a node leaves the 3 x 3
neighbourhood when the nearest node changes: so s is continuous in x, y (C1 in fact) for any tau, not only
approximately. The inverse distance makes the field interpolate: on a node its own weight is 1 and s is exactly
tanh(k (z - h_node)). With tau = 1 a query a quarter cell from node A towards node B gives w_A ≈ 0.93,
w_B ≈ 0.07; at the midpoint both get 1/2, so a step in heights becomes a steep but smooth facade at the midline
(the paper's "vertical plateau": between the two heights s ≈ w_ground - w_roof, zero where they balance).
Smaller tau sharpens the transition (Voronoi-like terraces), larger tau blends more neighbours.

Beyond the outermost node centres (the half-cell rim of [-1, 1]^2 and anything outside) the query is clamped
to the node hull, i.e. the field is extended unchanged outwards.

Sign convention: s < 0 INSIDE (below the surface, in the ground / building), s > 0 above it; s is
non-decreasing in z (paper Eq. 1), and in fact strictly increasing:

    ds/dz = k sum_j w_j sech^2(k (z - h_j)) > 0,

because every w_j >= 0, they sum to 1 and sech^2 > 0. This holds by construction for ANY parameter values, so
the optimiser cannot break monotonicity. In floating point tanh saturates: once k |z - h_j| exceeds about 9
(float32) for every j the computed derivative is 0, never negative.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from earthsynth.errors import ConfigError

_NEIGHBOUR_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1), (1, -1), (1, 0), (1, 1))


@dataclass(frozen=True)
class ZSDFConfig:
    grid_hw: tuple[int, int] = (256, 256)   # Orbit to Ground B.2: learnable 256 x 256 grid per scene division
    sharpness: float = 80.0                 # k, "curve sharpness", 80 in normalised units (B.2)
    temperature: float = 1.0                # tau of the inverse-distance softmax, in grid cells (ours; see module doc)
    distance_eps: float = 1e-4              # eps in sqrt(d^2 + eps^2), grid cells: a finite weight on the node itself

    def __post_init__(self):
        if len(self.grid_hw) != 2 or min(self.grid_hw) < 1:
            raise ConfigError(f"grid_hw must be two positive sizes (H, W), got {self.grid_hw!r}")
        if not self.sharpness > 0 or not self.temperature > 0 or not self.distance_eps > 0:
            raise ConfigError("sharpness, temperature and distance_eps must be positive, got "
                              f"{self.sharpness}, {self.temperature}, {self.distance_eps}")


def _smoothstep(t: torch.Tensor) -> torch.Tensor:
    return t * t * (3.0 - 2.0 * t)


class ZMonotonicSDF(nn.Module):
    """A learnable (H, W) grid of height offsets `offsets_hw` defining a Z-monotonic SDF on [-1, 1]^3.

    `query(points_n3)` evaluates s at arbitrary points; `sample_grid(resolution)` evaluates it on the regular
    R^3 grid that `earthsynth.mesh.isosurface.extract_isosurface` marches (layout [ix, iy, iz]), sharing the
    xy weights of each column across all z samples. Both are differentiable w.r.t. `offsets_hw`.
    """

    def __init__(self, config: ZSDFConfig = ZSDFConfig(), *, device=None, dtype=torch.float32):
        super().__init__()
        self.config = config
        self.offsets_hw = nn.Parameter(torch.zeros(config.grid_hw, device=device, dtype=dtype))

    @classmethod
    def from_heightmap(cls, height_hw, config: ZSDFConfig | None = None, *, device=None, dtype=torch.float32):
        """A field whose surface is the given (normalised) height map; the grid keeps the map's shape unless
        `config` names another one (then the map is resampled)."""
        height = torch.as_tensor(height_hw)
        if config is None:
            config = ZSDFConfig(grid_hw=tuple(int(n) for n in height.shape[-2:]))
        field = cls(config, device=device, dtype=dtype)
        field.init_from_heightmap(height)
        return field

    @torch.no_grad()
    def init_from_heightmap(self, height_hw) -> None:
        """Set the offsets from a DSM-like (h, w) grid of heights in normalised units (rows follow +y, see the
        module doc). A grid of another shape is resampled over the same [-1, 1]^2 footprint (pixel centres
        aligned; antialiased bilinear)."""
        height = torch.as_tensor(height_hw, dtype=self.offsets_hw.dtype, device=self.offsets_hw.device)
        if height.ndim != 2 or min(height.shape) < 1:
            raise ConfigError(f"height_hw must be a 2D (H, W) grid, got shape {tuple(height.shape)}")
        if not torch.isfinite(height).all():
            raise ConfigError("height_hw contains NaN or infinite heights",
                              hint="fill no-data cells (e.g. with the ground height) before initialising")
        if tuple(height.shape) != tuple(self.offsets_hw.shape):
            height = F.interpolate(height[None, None], size=tuple(self.offsets_hw.shape), mode="bilinear",
                                   align_corners=False, antialias=True)[0, 0]
        self.offsets_hw.copy_(height)

    # ------------------------------------------------------------------------------------------ weights
    def _column_weights(self, xy_c2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each column (x, y): flat node indices (C, 9) of its 3 x 3 neighbourhood and their weights
        (C, 9), summing to one (invalid neighbours carry index 0 and weight 0)."""
        height, width = self.offsets_hw.shape
        cfg = self.config
        # continuous node coordinates (node (i, j) at (fi, fj) = (i, j)), clamped to the node hull: beyond the
        # outermost node centres the field extends unchanged (replicate), and the nearest node keeps window 1
        fj = ((xy_c2[:, 0] + 1.0) * (0.5 * width) - 0.5).clamp(0, width - 1)
        fi = ((xy_c2[:, 1] + 1.0) * (0.5 * height) - 0.5).clamp(0, height - 1)
        j0 = torch.round(fj).long()
        i0 = torch.round(fi).long()
        offsets = torch.tensor(_NEIGHBOUR_OFFSETS, device=xy_c2.device)
        ii = i0[:, None] + offsets[None, :, 0]
        jj = j0[:, None] + offsets[None, :, 1]
        valid = (ii >= 0) & (ii < height) & (jj >= 0) & (jj < width)
        dy = fi[:, None] - ii
        dx = fj[:, None] - jj
        window = _smoothstep((1.5 - dx.abs()).clamp(0.0, 1.0)) * _smoothstep((1.5 - dy.abs()).clamp(0.0, 1.0))
        window = window * valid
        logits = 1.0 / (cfg.temperature * torch.sqrt(dx * dx + dy * dy + cfg.distance_eps ** 2))
        logits = logits.masked_fill(window <= 0, float("-inf"))
        # the nearest node always has window 1, so the row maximum is finite and the sum is >= 1
        unnormalised = window * torch.exp(logits - logits.amax(dim=1, keepdim=True))
        weights = unnormalised / unnormalised.sum(dim=1, keepdim=True)
        index = torch.where(valid, ii * width + jj, torch.zeros_like(ii))
        return index, weights

    # ------------------------------------------------------------------------------------------ queries
    def query(self, points_n3: torch.Tensor, *, chunk_size: int = 1 << 20) -> torch.Tensor:
        """s at (N, 3) points in normalised coordinates -> (N,), negative inside (below the surface)."""
        points = torch.as_tensor(points_n3, dtype=self.offsets_hw.dtype, device=self.offsets_hw.device)
        if points.ndim != 2 or points.shape[1] != 3:
            raise ConfigError(f"points_n3 must have shape (N, 3), got {tuple(points.shape)}")
        flat = self.offsets_hw.reshape(-1)
        parts = []
        for start in range(0, points.shape[0], chunk_size):
            chunk = points[start:start + chunk_size]
            index, weights = self._column_weights(chunk[:, :2])
            curves = torch.tanh(self.config.sharpness * (chunk[:, 2:3] - flat[index]))
            parts.append((weights * curves).sum(dim=1))
        return torch.cat(parts) if parts else points.new_zeros(0)

    def sample_grid(self, resolution, bounds_min=(-1.0, -1.0, -1.0), bounds_max=(1.0, 1.0, 1.0)) -> torch.Tensor:
        """s on the regular grid of `resolution` (int R or (Rx, Ry, Rz)) points spanning the box inclusively:
        point [ix, iy, iz] = bounds_min + (ix, iy, iz) * (bounds_max - bounds_min) / (R - 1), the layout
        `extract_isosurface(sdf_grid_rrr, bounds_min, bounds_max)` expects. Returns (Rx, Ry, Rz)."""
        sizes = (int(resolution),) * 3 if isinstance(resolution, numbers.Integral) \
            else tuple(int(r) for r in resolution)
        if len(sizes) != 3 or min(sizes) < 2:
            raise ConfigError(f"resolution must be an int or three sizes >= 2, got {resolution!r}")
        like = self.offsets_hw
        axes = [torch.linspace(float(lo), float(hi), n, dtype=like.dtype, device=like.device)
                for lo, hi, n in zip(bounds_min, bounds_max, sizes, strict=True)]
        gx, gy = torch.meshgrid(axes[0], axes[1], indexing="ij")
        index, weights = self._column_weights(torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1))
        heights = like.reshape(-1)[index]                                             # (C, 9)
        curves = torch.tanh(self.config.sharpness * (axes[2][None, :, None] - heights[:, None, :]))
        sdf = torch.einsum("cj,czj->cz", weights, curves)
        return sdf.reshape(sizes)

    def extra_repr(self) -> str:
        c = self.config
        return f"grid_hw={tuple(self.offsets_hw.shape)}, k={c.sharpness}, tau={c.temperature}"
