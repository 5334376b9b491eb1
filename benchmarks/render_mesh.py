"""Benchmark: triangle rasterisation of a city-like mesh at 1024^2 (perspective oblique and top-down ortho).

Prints one JSON line per measurement. Ours is the numba rasteriser (visibility + barycentrics + depth); when
`embreex` is installed, an Embree ray-casting peer renders the same mesh from the same cameras (one primary ray per
pixel centre: triangle id, distance, barycentrics), timed the same way. Warm-up first (JIT compile / BVH build are
excluded from "seconds" and reported apart), best of 3.

Two meshes: a city (grid terrain + boxes, 210k triangles, a few pixels each at 1024^2) and a dense terrain
(2M triangles, about half a pixel each top-down: the small-triangle regime where the per-triangle cost dominates).

    python benchmarks/render_mesh.py [--grid 300] [--boxes 3000] [--dense-grid 1000] [--size 1024]
"""

from __future__ import annotations

import argparse
import json
import time

import numba
import numpy as np

from earthsynth.geo.pinhole import Camera, OrthoCamera
from earthsynth.render.mesh import rasterize

BOX_FACES_F3 = np.array([[4, 5, 6], [4, 6, 7],                      # roof (z up)
                         [0, 1, 5], [0, 5, 4], [1, 2, 6], [1, 6, 5],  # walls, counter-clockwise from outside
                         [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]])


def city_mesh(grid: int, n_boxes: int, extent_m: float = 1000.0, seed: int = 0):
    """A grid terrain (2 grid^2 triangles) with `n_boxes` roofed boxes (10 triangles each) standing on it."""
    rng = np.random.default_rng(seed)
    xs = np.linspace(0.0, extent_m, grid + 1)
    x_gg, y_gg = np.meshgrid(xs, xs)
    z_gg = 5.0 * np.sin(x_gg / 97.0) * np.cos(y_gg / 131.0)
    terrain_n3 = np.column_stack([x_gg.ravel(), y_gg.ravel(), z_gg.ravel()])
    idx = np.arange((grid + 1) ** 2).reshape(grid + 1, grid + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    terrain_f3 = np.concatenate([np.column_stack([a, b, c]), np.column_stack([a, c, d])])
    centre_b2 = rng.uniform(20.0, extent_m - 20.0, (n_boxes, 2))
    half_b2 = rng.uniform(3.0, 12.0, (n_boxes, 2))
    top_b = rng.uniform(5.0, 60.0, n_boxes)
    corners_x = np.array([-1, 1, 1, -1, -1, 1, 1, -1])
    corners_y = np.array([-1, -1, 1, 1, -1, -1, 1, 1])
    box_vertices = np.stack([centre_b2[:, :1] + corners_x * half_b2[:, :1],
                             centre_b2[:, 1:] + corners_y * half_b2[:, 1:],
                             np.where(np.arange(8) < 4, -6.0, top_b[:, None])], axis=-1)  # (B, 8, 3)
    box_faces = BOX_FACES_F3[None] + len(terrain_n3) + 8 * np.arange(n_boxes)[:, None, None]
    vertices_n3 = np.concatenate([terrain_n3, box_vertices.reshape(-1, 3)])
    faces_f3 = np.concatenate([terrain_f3, box_faces.reshape(-1, 3)])
    return vertices_n3, faces_f3


def best_of(fn, repeats: int = 3) -> float:
    fn()  # warm-up: JIT compile, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def report(backend, camera_name, n_faces, width, height, seconds, **extra):
    line = {"bench": "render_mesh", "backend": backend, "camera": camera_name, "triangles": int(n_faces),
            "width": width, "height": height, "seconds": round(seconds, 5),
            "triangles_per_s": round(n_faces / seconds), "megapixels_per_s": round(width * height / seconds / 1e6, 2)}
    line.update(extra)
    print(json.dumps(line), flush=True)


def pixel_rays(camera):
    """World ray origins and directions through the pixel centres (directions scaled to unit z_cam)."""
    v, u = np.mgrid[0:camera.height, 0:camera.width].astype(float)
    if isinstance(camera, Camera):
        dirs_cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(camera.K).T
        origins = np.broadcast_to(camera.center, dirs_cam.shape)
    else:
        origins = camera.unproject(np.stack([u, v], -1), np.zeros_like(u))
        dirs_cam = np.broadcast_to(np.array([0.0, 0.0, 1.0]), origins.shape)
    dirs = dirs_cam @ camera.rotation
    return origins.reshape(-1, 3).astype(np.float32), dirs.reshape(-1, 3).astype(np.float32)


def embree_peer(vertices_n3, faces_f3, cameras, mesh_name):
    try:
        from embreex import rtcore_scene
        from embreex.mesh_construction import TriangleMesh
    except ImportError:
        print(json.dumps({"bench": "render_mesh", "backend": "embreex", "mesh": mesh_name,
                          "skipped": "embreex not installed"}))
        return
    start = time.perf_counter()
    scene = rtcore_scene.EmbreeScene()
    TriangleMesh(scene, vertices_n3[faces_f3].astype(np.float32))
    origins, dirs = pixel_rays(cameras[0][1])
    scene.run(origins[:1], dirs[:1])  # the BVH is committed lazily on the first query
    build_s = time.perf_counter() - start
    for name, camera in cameras:
        origins, dirs = pixel_rays(camera)
        seconds = best_of(lambda: scene.run(origins, dirs, output=1))
        report("embreex", name, len(faces_f3), camera.width, camera.height, seconds, mesh=mesh_name,
               build_seconds=round(build_s, 4), note="one primary ray per pixel; rays generated outside the timing")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=300, help="terrain cells per side of the city mesh")
    parser.add_argument("--boxes", type=int, default=3000)
    parser.add_argument("--dense-grid", type=int, default=1000, help="cells per side of the small-triangle terrain")
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    size = args.size
    cameras = [
        ("perspective-oblique", Camera.orbit((500.0, 500.0, 0.0), elevation_deg=45.0, azimuth_deg=30.0, radius=1200.0,
                                             width=size, height=size, fov_x_deg=60.0)),
        ("ortho-top-down", OrthoCamera.top_down(0.0, 1000.0, 1000.0 / size, size, size)),
    ]
    start = time.perf_counter()
    rasterize(np.eye(3), np.array([[0, 1, 2]]), cameras[0][1])
    compile_s = time.perf_counter() - start
    meshes = [("city", city_mesh(args.grid, args.boxes)), ("dense-terrain", city_mesh(args.dense_grid, 0))]
    max_threads = numba.get_num_threads()
    for mesh_name, (vertices_n3, faces_f3) in meshes:
        for name, camera in cameras:
            for threads in sorted({1, max_threads}):  # one core too: the CPU machines are shared
                numba.set_num_threads(threads)
                seconds = best_of(lambda: rasterize(vertices_n3, faces_f3, camera))
                report("earthsynth-numba", name, len(faces_f3), camera.width, camera.height, seconds,
                       mesh=mesh_name, threads=threads, first_call_seconds=round(compile_s, 3))
            numba.set_num_threads(max_threads)
        embree_peer(vertices_n3, faces_f3, cameras, mesh_name)


if __name__ == "__main__":
    main()
