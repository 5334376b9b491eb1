"""The scene folder: the input of every reconstruction pipeline.

    scene/
      scene.json            origin (lon, lat, alt), output CRS, GSD, height range, views, optional truth
      images/<view>.tif     satellite views, GeoTIFF with (normalised) RPC tags
      cameras/<view>.json   pinhole approximation + its max / mean reprojection error (written by
                            `earthsynth cameras approx`, never trusted blindly)
      truth/                synthetic or surveyed truth: dsm.tif, points.ply, mesh.glb, views/...
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from earthsynth.errors import InputFileError, SceneError
from earthsynth.geo.frames import ENUFrame

SCENE_FORMAT = "earthsynth-scene/1"


@dataclass(frozen=True)
class ViewRecord:
    name: str
    image: str                      # path relative to the scene folder
    width: int
    height: int
    bands: int
    dtype: str
    gsd: float                      # metres per pixel at the scene centre (from the RPC)
    date: str | None = None
    sun_elevation: float | None = None
    sun_azimuth: float | None = None
    source: str | None = None       # where it was imported from (informative)


@dataclass(frozen=True)
class Scene:
    root: Path
    name: str
    origin: dict                    # {"lon", "lat", "alt"}
    crs: str                        # CRS of georeferenced outputs (UTM of the origin)
    gsd: float
    height_range: tuple[float, float]
    bounds_enu: tuple[float, float, float, float]
    views: tuple[ViewRecord, ...]
    truth: dict = field(default_factory=dict)   # name -> relative path
    source: str = ""

    @property
    def frame(self) -> ENUFrame:
        return ENUFrame.from_dict(self.origin)

    def view(self, name: str) -> ViewRecord:
        for v in self.views:
            if v.name == name:
                return v
        raise SceneError(f"no view named {name!r}; views are {[v.name for v in self.views]}",
                         path=self.root / "scene.json")

    def image_path(self, name: str) -> Path:
        return self.root / self.view(name).image

    def camera_path(self, name: str) -> Path:
        return self.root / "cameras" / f"{name}.json"

    def truth_path(self, key: str) -> Path | None:
        rel = self.truth.get(key)
        return self.root / rel if rel else None

    def rpc(self, name: str):
        from earthsynth.geo.rpc_readers import read_rpc
        return read_rpc(self.image_path(name))

    def camera(self, name: str):
        """The pinhole approximation written by `earthsynth cameras approx`."""
        from earthsynth.geo.pinhole import camera_from_dict
        path = self.camera_path(name)
        if not path.exists():
            raise SceneError(f"no camera for view {name!r}", path=path,
                             hint=f"run `earthsynth cameras approx {self.root}` first")
        return camera_from_dict(json.loads(path.read_text()))

    def to_json(self) -> dict:
        return {
            "format": SCENE_FORMAT, "name": self.name, "origin": self.origin, "crs": self.crs,
            "gsd": self.gsd, "height_range": list(self.height_range), "bounds_enu": list(self.bounds_enu),
            "views": [asdict(v) for v in self.views], "truth": self.truth, "source": self.source,
        }


def utm_crs_for(lon: float, lat: float) -> str:
    zone = int(np.floor((lon + 180.0) / 6.0)) % 60 + 1
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


def save_scene_json(scene: Scene, root: Path | None = None) -> Path:
    root = Path(root or scene.root)
    path = root / "scene.json"
    path.write_text(json.dumps(scene.to_json(), indent=2))
    return path


def load_scene(root: str | Path) -> Scene:
    root = Path(root)
    path = root / "scene.json"
    if not path.is_file():
        raise SceneError("not a scene folder (no scene.json)", path=root,
                         hint="create one with `earthsynth scene import DIR --out SCENE` or `earthsynth scene synth`")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SceneError(f"scene.json is not valid JSON ({e})", path=path) from None
    if d.get("format") != SCENE_FORMAT:
        raise SceneError(f"unknown scene format {d.get('format')!r}, expected {SCENE_FORMAT!r}", path=path)
    try:
        views = tuple(ViewRecord(**v) for v in d["views"])
        scene = Scene(root=root, name=d["name"], origin=d["origin"], crs=d["crs"], gsd=float(d["gsd"]),
                      height_range=tuple(d["height_range"]), bounds_enu=tuple(d["bounds_enu"]),
                      views=views, truth=d.get("truth") or {}, source=d.get("source", ""))
    except (KeyError, TypeError) as e:
        raise SceneError(f"scene.json is missing or has a malformed field ({e})", path=path) from None
    validate_scene(scene)
    return scene


def validate_scene(scene: Scene) -> None:
    """Cheap structural checks: files present, unique names, sane ranges."""
    path = scene.root / "scene.json"
    names = [v.name for v in scene.views]
    if not names:
        raise SceneError("scene has no views", path=path)
    if len(set(names)) != len(names):
        raise SceneError(f"duplicate view names in {names}", path=path)
    for v in scene.views:
        if not (scene.root / v.image).is_file():
            raise InputFileError(f"image of view {v.name!r} is missing", path=scene.root / v.image)
    lo, hi = scene.height_range
    if not hi > lo:
        raise SceneError(f"height_range must be increasing, got {scene.height_range}", path=path)
