"""One optimisation step of the Orbit to Ground geometry stage (`earthsynth.mesh.geometry`), made cheap on a CPU.

The straightforward step, `extract_isosurface(field.sample_grid(...))`, differentiates through EVERY grid sample,
although a vertex of the iso-surface depends only on the two SDF values of its grid edge. Here:

1. the whole (Rx, Ry, Rz) SDF grid is sampled WITHOUT a graph (the xy interpolation weights of the columns are
   computed once per division: they depend on the sample positions only), and marching tetrahedra
   (`earthsynth.mesh.isosurface.marching_tetrahedra`) finds the faces and each vertex's two grid points;
2. only those values are evaluated again WITH a graph, and the vertices are placed exactly as marching tetrahedra
   places them, x = x_a + s_a / (s_a - s_b) (x_b - x_a).

Values and gradients are those of the straightforward step (the tests check both); the cost of the backward pass
drops from the grid's size to the surface's. FlexiCubes' SDF sign regulariser is handled the same way (it only
involves grid edges whose ends differ in sign), and the Laplacian uses the half-edges of the faces: on a
consistently oriented 2-manifold every interior vertex sees each 1-ring neighbour exactly once that way, so no
`unique` over edges is needed (boundary vertices of the open surface are left out of Eq. A5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from earthsynth.geo.pinhole import OrthoCamera
from earthsynth.mesh.heightmap import GridBox
from earthsynth.mesh.isosurface import marching_tetrahedra
from earthsynth.mesh.regularizers import RegularizerWeights, normal_tv_loss
from earthsynth.mesh.zsdf import ZMonotonicSDF
from earthsynth.render.mesh import Fragments, barycentrics_differentiable, interpolate, rasterize

MIN_PROJECTED_AREA_PX = 1e-3   # twice the projected area, px^2, below which a triangle's barycentrics are frozen
_BOUNDARY_TOL = 1e-6           # normalised units: a vertex this close to the grid's outer x / y faces is on its rim


def cell_centre_bounds(samples_3) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalised bounds of `samples_3` samples per axis at the centres of as many equal cells of [-1, 1]: with
    `closed=True` the caps then lie exactly on the box faces."""
    lo = tuple(-1.0 + 1.0 / int(n) for n in samples_3)
    return lo, tuple(-v for v in lo)


class GridSampler:
    """The SDF of `field` on the regular grid of `samples_3` points at cell centres of [-1, 1]^3 (the layout of
    `field.sample_grid(samples_3, *cell_centre_bounds(samples_3))`), whole or at chosen flat indices."""

    def __init__(self, field: ZMonotonicSDF, samples_3):
        like = field.offsets_hw
        self.samples_3 = tuple(int(n) for n in samples_3)
        self.lo, self.hi = cell_centre_bounds(self.samples_3)
        axes = [torch.linspace(a, b, n, dtype=like.dtype, device=like.device)
                for a, b, n in zip(self.lo, self.hi, self.samples_3, strict=True)]
        gx, gy = torch.meshgrid(axes[0], axes[1], indexing="ij")
        with torch.no_grad():   # the weights depend on the sample positions only (zsdf.py: _column_weights)
            self.index, self.weights = field._column_weights(torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1))
        self.z = axes[2]
        self.field = field
        self.spacing_3 = torch.tensor([(b - a) / (n - 1) for a, b, n in zip(self.lo, self.hi, self.samples_3)],
                                      dtype=like.dtype, device=like.device)

    def grid(self) -> torch.Tensor:
        """(Rx, Ry, Rz) values, differentiable w.r.t. the offsets when grad is enabled."""
        heights = self.field.offsets_hw.reshape(-1)[self.index]                          # (C, 9)
        curves = torch.tanh(self.field.config.sharpness * (self.z[None, :, None] - heights[:, None, :]))
        return torch.einsum("cj,czj->cz", self.weights, curves).reshape(self.samples_3)

    def at(self, flat_n: torch.Tensor) -> torch.Tensor:
        """Values at flat grid indices (N,) ((ix * Ry + iy) * Rz + iz), differentiable."""
        nz = self.samples_3[2]
        column, layer = torch.div(flat_n, nz, rounding_mode="floor"), flat_n % nz
        heights = self.field.offsets_hw.reshape(-1)[self.index[column]]                  # (N, 9)
        curves = torch.tanh(self.field.config.sharpness * (self.z[layer][:, None] - heights))
        return (self.weights[column] * curves).sum(dim=1)

    def position(self, flat_n: torch.Tensor) -> torch.Tensor:
        """Normalised (N, 3) positions of flat grid indices."""
        ny, nz = self.samples_3[1], self.samples_3[2]
        ijk = torch.stack([flat_n // (ny * nz), (flat_n // nz) % ny, flat_n % nz], dim=1)
        return self.spacing_3.new_tensor(self.lo) + ijk.to(self.spacing_3.dtype) * self.spacing_3


def open_surface(sampler: GridSampler) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The open (closed=False) iso-surface, differentiable w.r.t. the offsets through the edge values only:
    -> (vertices_v3 normalised, faces_f3, the graph-free SDF grid)."""
    with torch.no_grad():
        sdf = sampler.grid()
        surface = marching_tetrahedra(sdf, sampler.lo, sampler.hi, closed=False)
    edges = surface.edges_v2
    if edges.shape[0] == 0:
        return surface.vertices_v3, surface.faces_f3, sdf
    values = sampler.at(edges.reshape(-1)).reshape(-1, 2)
    s_a, s_b = values[:, 0], values[:, 1]
    x_a, x_b = sampler.position(edges[:, 0]), sampler.position(edges[:, 1])
    t = s_a / (s_a - s_b)
    return x_a + t[:, None] * (x_b - x_a), surface.faces_f3, sdf


def sign_change_loss(sampler: GridSampler, sdf_grid: torch.Tensor) -> torch.Tensor:
    """`regularizers.sdf_sign_change_loss` of the sampler's grid, differentiating through the sign-changing grid
    edges only (the others do not enter it). `sdf_grid`: the graph-free grid (from `open_surface`)."""
    firsts, seconds = [], []
    flat = torch.arange(sdf_grid.numel(), device=sdf_grid.device).reshape(sdf_grid.shape)
    sign = torch.sign(sdf_grid)
    for axis in range(3):
        n = sdf_grid.shape[axis]
        change = sign.narrow(axis, 0, n - 1) != sign.narrow(axis, 1, n - 1)
        firsts.append(flat.narrow(axis, 0, n - 1)[change])
        seconds.append(flat.narrow(axis, 1, n - 1)[change])
    a, b = torch.cat(firsts), torch.cat(seconds)
    if a.numel() == 0:
        return sampler.field.offsets_hw.sum() * 0.0
    values = sampler.at(torch.cat([a, b]))
    s_a, s_b = values[: a.numel()], values[a.numel():]
    return (F.binary_cross_entropy_with_logits(s_a, (s_b > 0).to(s_a.dtype))
            + F.binary_cross_entropy_with_logits(s_b, (s_a > 0).to(s_b.dtype)))


def rim_vertices(vertices_v3: torch.Tensor, lo, hi) -> torch.Tensor:
    """(V,) bool: vertices on the open boundary of the surface (the grid's outer x / y faces)."""
    xy = vertices_v3[:, :2].detach()
    lo_t, hi_t = xy.new_tensor(lo[:2]), xy.new_tensor(hi[:2])
    return ((xy <= lo_t + _BOUNDARY_TOL) | (xy >= hi_t - _BOUNDARY_TOL)).any(dim=1)


def interior_laplacian_loss(vertices_v3: torch.Tensor, faces_f3: torch.Tensor, interior_v: torch.Tensor):
    """Eq. A5 (`regularizers.laplacian_loss` with `vertex_mask_v=interior_v`) over the interior vertices of a
    consistently oriented manifold surface, its 1-rings read from the half-edges of the faces."""
    if not bool(interior_v.any()):
        return vertices_v3.sum() * 0.0
    src = faces_f3.reshape(-1)
    dst = faces_f3[:, [1, 2, 0]].reshape(-1)
    neighbour_sum = torch.zeros_like(vertices_v3).index_add_(0, src, vertices_v3[dst])
    degree = torch.bincount(src, minlength=vertices_v3.shape[0]).to(vertices_v3.dtype)
    delta = vertices_v3 - neighbour_sum / degree.clamp(min=1)[:, None]
    return delta[interior_v].square().sum(dim=1).mean()


def _safe_barycentrics(pixel_v3: torch.Tensor, faces_f3: torch.Tensor, fragments: Fragments, camera) -> torch.Tensor:
    """Differentiable barycentrics, except on pixels of (nearly) vertical triangles, whose top-down projection is
    (almost) degenerate: their barycentrics (~ 1 / area) would blow up or be 0 / 0; those keep the rasteriser's
    values, without gradient (their z still carries one)."""
    corners = pixel_v3.detach()[faces_f3]
    edge_a, edge_b = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    area2_f = (edge_a[:, 0] * edge_b[:, 1] - edge_a[:, 1] * edge_b[:, 0]).abs().cpu()
    ids = fragments.triangle_id_hw
    safe = (ids >= 0) & (area2_f[ids.clamp(min=0)] > MIN_PROJECTED_AREA_PX)
    safe_fragments = Fragments(torch.where(safe, ids, torch.full_like(ids, -1)), fragments.barycentrics_hw3,
                               fragments.depth_hw, fragments.supersample)
    bary_hw3 = barycentrics_differentiable(pixel_v3, faces_f3, safe_fragments, camera)
    frozen = fragments.barycentrics_hw3.to(device=bary_hw3.device, dtype=bary_hw3.dtype)
    return torch.where(safe.to(bary_hw3.device)[..., None], bary_hw3, frozen)


def top_down_render(vertices_v3: torch.Tensor, faces_f3: torch.Tensor, shape_hw, half_extent_3: torch.Tensor):
    """Eq. A3 render of a mesh in normalised coordinates onto an (H, W) grid (rows following +y):
    -> (heights_hw in normalised z, differentiable; face normals in metres (H, W, 3); covered (H, W) bool).
    Same heights as `render_height_torch` with an `OrthoCamera.top_down` over the grid."""
    height, width = shape_hw
    scale = vertices_v3.new_tensor([0.5 * width, 0.5 * height, 1.0])
    pixel_v3 = (vertices_v3 + vertices_v3.new_tensor([1.0, 1.0, 0.0])) * scale        # (x+1)/2 W, (y+1)/2 H, z
    camera = OrthoCamera.top_down(0.0, float(height), 1.0, width, height)            # image row 0 = max y
    fragments = rasterize(pixel_v3, faces_f3, camera)
    bary_hw3 = _safe_barycentrics(pixel_v3, faces_f3, fragments, camera)
    heights_hw = interpolate(pixel_v3[:, 2:3], faces_f3, fragments, barycentrics_hw3=bary_hw3)[..., 0]
    corners = (vertices_v3 * half_extent_3)[faces_f3]                                 # metres, up to a shift
    normals_f3 = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals_f3 = normals_f3 * torch.rsqrt(normals_f3.square().sum(dim=1, keepdim=True) + 1e-24)  # 0 if degenerate
    covered = fragments.mask_hw.to(vertices_v3.device)
    normals_hw3 = normals_f3[fragments.triangle_id_hw.clamp(min=0).to(vertices_v3.device)]
    return heights_hw.flip(0), normals_hw3.flip(0), covered.flip(0)


def division_losses(sampler: GridSampler, box: GridBox, target_hw: torch.Tensor, mask_hw: torch.Tensor,
                    weights: RegularizerWeights, sdf_sign_weight: float, *,
                    normal_tv_observed_only: bool = True) -> dict[str, torch.Tensor]:
    """All loss terms of one step over one division (normalised units, Eq. 2 / A4-A6); `total` carries the graph.
    target_hw / mask_hw: the binned heights (normalised z) and Omega on `box`'s grid. normal_tv_observed_only:
    L_Nrm over the pixels of Omega only (else over every covered pixel, as the paper's Eq. A6)."""
    vertices, faces, sdf = open_surface(sampler)
    zero = sampler.field.offsets_hw.sum() * 0.0
    if faces.shape[0] == 0:
        return {"total": zero, "height": zero, "laplacian": zero, "normal_tv": zero, "sdf_sign": zero}
    half_extent = vertices.new_tensor(0.5 * (box.hi_3 - box.lo_3))
    heights, normals, covered = top_down_render(vertices, faces, box.shape_hw, half_extent)
    valid = covered & mask_hw
    height = (heights - target_hw).abs()[valid].mean() if bool(valid.any()) else zero
    interior = ~rim_vertices(vertices, sampler.lo, sampler.hi)
    terms = {"height": height,
             "laplacian": interior_laplacian_loss(vertices, faces, interior) if weights.laplacian else zero,
             "normal_tv": normal_tv_loss(normals, valid if normal_tv_observed_only else covered)
             if weights.normal_tv else zero,
             "sdf_sign": sign_change_loss(sampler, sdf) if sdf_sign_weight else zero}
    terms["total"] = (height + weights.laplacian * terms["laplacian"] + weights.normal_tv * terms["normal_tv"]
                      + sdf_sign_weight * terms["sdf_sign"])
    return terms
