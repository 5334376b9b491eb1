"""Orbit to Ground (paper 003): satellite MVS -> Z-monotonic SDF -> texture atlas -> generative restoration.

`mvs.run_mvs` is the first stage: a multi-view height sweep that turns a scene folder into a DSM and an ENU
point cloud. Submodules are imported on use so that `import earthsynth.mesh` stays cheap (numba compiles lazily).
"""
