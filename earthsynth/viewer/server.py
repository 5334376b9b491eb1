"""A tiny local static server for the web viewer: the page, its npm libraries and one run folder.

URL layout (one origin, so the page's ES modules, workers and data share it):
    /                    static/index.html (the viewer page); /viewer.js, /viewer.css ... from static/
    /node_modules/...    three.js and the splat renderer, installed by `npm ci --prefix earthsynth/viewer`
    /run/<path>          files of the run folder (splats PLY, meshes GLB, ...)
    /run-files.json      the .ply / .glb files of the run folder, for the page's file list
Nothing outside those three folders is served: a path that resolves elsewhere (`..`, a symlink leading out)
gets 403. The server binds a loopback address only; use `ssh -L` to look at a run on another machine.
Responses carry cross-origin isolation headers so the splat renderer's sort worker can use SharedArrayBuffer.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlencode, urlsplit

from earthsynth.errors import ConfigError, EarthsynthError, InputFileError
from earthsynth.io.atomic import TEMP_PREFIX

VIEWER_DIR = Path(__file__).resolve().parent
STATIC_DIR = VIEWER_DIR / "static"
NODE_MODULES_ENV = "EARTHSYNTH_NODE_MODULES"     # another node_modules folder (e.g. for an installed wheel)
# files the page imports; their presence means `npm ci` has run
REQUIRED_MODULES = ("three/build/three.module.js",
                    "@mkkellogg/gaussian-splats-3d/build/gaussian-splats-3d.module.js")
VIEWABLE_SUFFIXES = (".ply", ".glb")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".json": "application/json",
    ".map": "application/json", ".wasm": "application/wasm", ".png": "image/png", ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg", ".webp": "image/webp", ".glb": "model/gltf-binary", ".gltf": "model/gltf+json",
    ".ply": "application/octet-stream", ".bin": "application/octet-stream", ".ktx2": "image/ktx2",
}


def find_node_modules() -> Path:
    """The node_modules folder holding the viewer's npm libraries, or a clear error saying how to install them."""
    candidate = Path(os.environ.get(NODE_MODULES_ENV) or VIEWER_DIR / "node_modules")
    missing = [m for m in REQUIRED_MODULES if not (candidate / m).is_file()]
    if missing:
        raise EarthsynthError(
            f"the web viewer's npm libraries are not installed (missing {', '.join(missing)})", path=candidate,
            hint=f"run `npm ci --prefix {VIEWER_DIR}` (or `make viewer`), or point {NODE_MODULES_ENV} "
                 "at a node_modules folder that has them")
    return candidate.resolve()


def _inside(root: Path, relative: str) -> Path | None:
    """root/relative resolved (symlinks followed), or None when it lies outside root."""
    path = (root / relative).resolve()
    return path if path == root or path.is_relative_to(root) else None


def list_viewable_files(run_dir) -> list[str]:
    """Paths (relative, '/'-separated, sorted) of the splat PLYs and GLB meshes in a run folder; files still
    being written (atomic temporary names) and links leading out of the folder are left out."""
    run_dir = Path(run_dir).resolve()
    return sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")
                  if p.suffix.lower() in VIEWABLE_SUFFIXES and not p.name.startswith(TEMP_PREFIX)
                  and p.is_file() and _inside(run_dir, str(p)))


class _ViewerRequestHandler(BaseHTTPRequestHandler):
    """GET / HEAD of files under the three roots set on the server; anything else is refused."""

    server: "ViewerServer"

    def do_GET(self):
        self._serve(send_body=True)

    def do_HEAD(self):
        self._serve(send_body=False)

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        # no-cache (revalidate), not no-store: Chromium reports no-store fetch streams read to the end as
        # aborted requests (microsoft/playwright#42742), which would look like load failures to a test
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format, *args):   # noqa: A002 (http.server's name) -- keep test and CLI output clean
        pass

    def _resolve(self, url_path: str) -> Path | None:
        """The file a URL path names, or None when it is outside every served folder."""
        if url_path in ("", "/"):
            return STATIC_DIR / "index.html"
        head, _, rest = url_path.lstrip("/").partition("/")
        if head == "node_modules":
            return _inside(self.server.node_modules, rest)
        if head == "run":
            return _inside(self.server.run_dir, rest)
        return _inside(STATIC_DIR, url_path.lstrip("/"))

    def _serve(self, *, send_body: bool):
        url_path = unquote(urlsplit(self.path).path)
        if url_path == "/run-files.json":
            body = json.dumps({"files": list_viewable_files(self.server.run_dir)}).encode()
            return self._send_bytes(body, "application/json", send_body)
        try:
            path = self._resolve(url_path)
        except (ValueError, OSError):   # a NUL byte, a name too long for the file system ...
            return self.send_error(HTTPStatus.BAD_REQUEST, "not a valid file path")
        if path is None:
            return self.send_error(HTTPStatus.FORBIDDEN, "outside the served folders")
        if not path.is_file():
            return self.send_error(HTTPStatus.NOT_FOUND)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"))
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        if send_body:
            with path.open("rb") as f:
                try:
                    shutil.copyfileobj(f, self.wfile)
                except (BrokenPipeError, ConnectionResetError):   # the page navigated away mid-download
                    pass

    def _send_bytes(self, body: bytes, content_type: str, send_body: bool):
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)


class ViewerServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows the run folder and node_modules it serves; `stop()` ends it."""

    daemon_threads = True

    def __init__(self, address, run_dir: Path, node_modules: Path):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.run_dir = run_dir
        self.node_modules = node_modules
        super().__init__(address, _ViewerRequestHandler)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def _check_loopback(host: str) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"the viewer serves local files and binds loopback addresses only, not {host!r}",
                          hint="use 127.0.0.1; to look from another machine, forward the port with `ssh -L`")


def serve(run_dir, *, host: str = "127.0.0.1", port: int = 0,
          node_modules=None) -> tuple[ViewerServer, str]:
    """Start serving the viewer and `run_dir` in a background thread.

    Returns (server, url of the viewer page); port 0 picks a free port. Call `server.stop()` when done.
    Open `url + "?splats=run/<file>.ply"` (or `&mesh=run/<file>.glb`); without a query the page lists the
    run folder's PLY and GLB files. node_modules: the npm libraries' folder (default: find_node_modules())."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputFileError("is not a folder", path=run_dir, hint="pass the run folder written by a pipeline")
    _check_loopback(host)
    node_modules = find_node_modules() if node_modules is None else Path(node_modules).resolve()
    try:
        server = ViewerServer((host, port), run_dir.resolve(), node_modules)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror})",
                          hint="choose another --port, or 0 for a free one") from None
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="earthsynth-viewer",
                     daemon=True).start()
    bound_host, bound_port = server.server_address[:2]
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    return server, f"http://{shown_host}:{bound_port}/"


def viewer_url(base_url: str, *, splats: str | None = None, mesh: str | None = None, **camera) -> str:
    """The page URL showing run-folder files (paths relative to the run folder) with optional camera
    parameters (camera="x,y,z", target="x,y,z", fov=degrees, ui=0 ...)."""
    query = []
    if splats:
        query.append(("splats", "run/" + quote(splats)))
    if mesh:
        query.append(("mesh", "run/" + quote(mesh)))
    query += [(key, str(value)) for key, value in camera.items() if value is not None]
    # the page reads each value as a URL, so a file name's own '%', '#' or space stays encoded inside it
    return base_url + ("?" + urlencode(query, safe="/,") if query else "")
