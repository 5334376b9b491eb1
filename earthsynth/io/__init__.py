"""Files in and out: rasters, scenes, meshes, point clouds, splats."""
