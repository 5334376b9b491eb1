"""Renderers shared by every pipeline: a CPU triangle rasteriser with differentiable interpolation, and shading."""

from earthsynth.render.threads import prefer_workqueue_threads

prefer_workqueue_threads()   # before any numba kernel starts a thread pool (see threads.py)

# ruff: noqa: E402

from earthsynth.render.mesh import (
    Fragments,
    RenderOutput,
    barycentrics_differentiable,
    downsample,
    face_normals,
    interpolate,
    rasterize,
    render_height,
    render_height_torch,
    render_textured,
    sample_texture,
    scaled_camera,
)
from earthsynth.render.shading import (
    Appearance,
    ShadedView,
    lambert,
    random_appearance,
    shade_view,
    shadow_lit_mask,
    sun_direction,
)

__all__ = [
    "Appearance",
    "ShadedView",
    "lambert",
    "random_appearance",
    "shade_view",
    "shadow_lit_mask",
    "sun_direction",
    "Fragments",
    "RenderOutput",
    "barycentrics_differentiable",
    "downsample",
    "face_normals",
    "interpolate",
    "rasterize",
    "render_height",
    "render_height_torch",
    "render_textured",
    "sample_texture",
    "scaled_camera",
]
