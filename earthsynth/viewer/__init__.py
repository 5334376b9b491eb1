"""Web viewer for a run's outputs: Gaussian splats (Inria PLY) and meshes (GLB) in the browser.

`server.serve(run_dir)` serves the static page (static/), its npm libraries (three.js and
@mkkellogg/gaussian-splats-3d, installed by `npm ci --prefix earthsynth/viewer`) and the run folder from
a loopback address; `screenshot.screenshot(url, png)` renders a page in headless Chromium with software
WebGL (SwiftShader), which is how the tests check that exported files really display.
"""

from earthsynth.viewer.screenshot import find_chromium, screenshot
from earthsynth.viewer.server import find_node_modules, list_viewable_files, serve, viewer_url

__all__ = ["find_chromium", "find_node_modules", "list_viewable_files", "screenshot", "serve", "viewer_url"]
