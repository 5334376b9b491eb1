"""Orbit to Ground (paper 003): satellite MVS -> Z-monotonic SDF -> texture atlas -> generative restoration.

`mvs.run_mvs` is the first stage: a multi-view height sweep that turns a scene folder into a DSM and an ENU
point cloud. Submodules are imported on use so that `import earthsynth.mesh` stays cheap (numba compiles lazily).
"""

from earthsynth.render.threads import prefer_workqueue_threads

prefer_workqueue_threads()   # the MVS kernels run numba parallel loops next to torch (see render/threads.py)
