"""RPCModel on real RPC files: pixel-convention normalisation, GDAL cross-checks, round trips, I/O.

Real data: ../shared/data/real (see its MANIFEST.md). The numbers asserted here were measured on
that data; each tolerance says why it is what it is.
"""

from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import rasterio
from rasterio.transform import RPCTransformer

from earthsynth.errors import MissingRPCError
from earthsynth.geo.rpc import RPCModel
from earthsynth.geo.rpc_readers import find_rpc_for_image, read_rpc

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
pytestmark = [
    pytest.mark.skipif(not REAL.is_dir(), reason=f"real data folder {REAL} not present"),
    # Raw satellite images and the small test tifs have no geotransform; that is expected here.
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
]

RPCM = REAL / "rpcm_rpc_files"
REUNION = REAL / "s2p_pair_reunion"
JAX_TIF = REAL / "dfc2019_jax068" / "JAX_068_001_RGB.tif"
JAX_JSON = RPCM / "JAX_068_001_RGB.json"
ENMAP = next(iter(sorted(RPCM.glob("ENMAP*METADATA.XML"))), RPCM / "ENMAP-missing")

RPC_FILES = sorted(p for p in RPCM.glob("*") if p.name != "rpc_unsupported.xml") + \
    sorted((REAL / "s2p_pleiades_rpc_xml_only").glob("*/*.XML")) + \
    [REUNION / "img_01.tif", REUNION / "img_02.tif", JAX_TIF,
     REUNION / "xml_variant_2019" / "rpc_01.xml", REUNION / "xml_variant_2019" / "rpc_02.xml"]


@lru_cache(maxsize=None)
def model_of(path: Path) -> RPCModel:
    return read_rpc(path)


def points_inside_image(model: RPCModel, n: int = 7, n_heights: int = 3):
    """(col, row, alt, lon, lat) for an n x n pixel grid at heights inside the RPC's height range."""
    width, height = model.image_size()
    cols, rows = np.meshgrid(np.linspace(0, width - 1, n), np.linspace(0, height - 1, n))
    low, high = model.alt_range
    alts = np.linspace(low + 0.1 * (high - low), high - 0.1 * (high - low), n_heights)
    col, row, alt = (np.broadcast_to(a, (n_heights, n, n)).ravel() for a in (cols, rows, alts[:, None, None]))
    lon, lat = model.localization(col, row, alt)
    return col, row, alt, lon, lat


def test_every_listed_file_exists():
    assert len(RPC_FILES) == 11 + 40 + 5
    assert all(p.is_file() for p in RPC_FILES)


# --------------------------------------------------------------------- Pleiades 1-based vs 0-based


@pytest.mark.parametrize("index", ["01", "02"])
def test_reunion_dimap_xml_agrees_with_tiff_tags(index):
    """Same Pleiades image twice: RPC in TIFF tags (GDAL convention) and in DIMAP XML (1-based).
    The raw offsets differ by exactly 1 px; after normalisation the models are bit-identical."""
    tags = model_of(REUNION / f"img_{index}.tif")
    xml_path = REUNION / "xml_variant_2019" / f"rpc_{index}.xml"
    dimap = model_of(xml_path)
    raw = ElementTree.parse(xml_path).getroot().find(".//RFM_Validity")
    assert float(raw.find("SAMP_OFF").text) - tags.col_offset == 1.0
    assert float(raw.find("LINE_OFF").text) - tags.row_offset == 1.0

    col, row, alt, lon, lat = points_inside_image(tags)
    col_t, row_t = tags.projection(lon, lat, alt)
    col_x, row_x = dimap.projection(lon, lat, alt)
    # Measured difference: exactly 0 (the tags were written from this XML with offset - 1).
    assert np.max(np.abs(col_x - col_t)) <= 1e-9
    assert np.max(np.abs(row_x - row_t)) <= 1e-9


def test_dfc2019_json_agrees_with_tiff_tags_to_the_bundle_adjustment():
    """The Sat-NeRF JSON holds the bundle-adjusted crop RPC of the same WV3 image: it must agree with
    the TIFF tags up to a near-constant correction of (-1.31, -1.98) px (measured). A swapped
    row/col, a 0.5 px or a 1 px convention error would all move that offset out of these bounds."""
    tags, sat_nerf = model_of(JAX_TIF), model_of(JAX_JSON)
    assert (sat_nerf.width, sat_nerf.height) == (tags.width, tags.height) == (746, 815)
    col, row, alt, lon, lat = points_inside_image(tags)
    col_j, row_j = sat_nerf.projection(lon, lat, alt)
    d_col, d_row = col_j - col, row_j - row
    assert np.max(np.hypot(d_col, d_row)) < 3.0
    assert -1.5 < d_col.mean() < -1.1 and -2.2 < d_row.mean() < -1.8
    assert d_col.std() < 0.05 and d_row.std() < 0.05


def test_enmap_corner_pixels_match_the_metadata_bounding_polygon():
    """Evidence for the EnMAP convention (no image here): the scene's bounding-polygon corners,
    projected at the scene's mean ground elevation, fall on the centres of the corner pixels
    (0, 0), (999, 0), (999, 1023), (0, 1023) to within terrain effects (measured mean offset
    (+0.16, +0.02) px). A 1-based convention would show a mean offset of about -1 px."""
    model = model_of(ENMAP)
    root = ElementTree.parse(ENMAP).getroot()
    corners = {p.findtext("frame"): (float(p.findtext("longitude")), float(p.findtext("latitude")))
               for p in root.find("base/spatialCoverage/boundingPolygon")}
    elevation = float(root.findtext(".//meanGroundElevation"))
    expected = {"upper_left": (0, 0), "upper_right": (999, 0), "lower_right": (999, 1023), "lower_left": (0, 1023)}
    offsets = np.array([np.subtract(model.projection(*corners[k], elevation), expected[k]) for k in expected])
    assert np.all(np.abs(offsets) < 1.0)
    assert np.all(np.abs(offsets.mean(axis=0)) < 0.25)


# --------------------------------------------------------------------- GDAL cross-check


def gdal_transformer(model: RPCModel) -> RPCTransformer:
    # GDAL's inverse stops at RPC_PIXEL_ERROR_THRESHOLD (default 0.1 px): far too loose to compare.
    return RPCTransformer(model.to_rasterio(), RPC_PIXEL_ERROR_THRESHOLD=1e-8, RPC_MAX_ITERATIONS=100)


@pytest.mark.parametrize("path", RPC_FILES, ids=lambda p: p.name[:48])
def test_projection_and_localization_agree_with_gdal(path):
    """GDAL's RPC transformer is an independent implementation of the polynomial and its inverse.

    GDAL's pixel space has (0, 0) at the top-left CORNER of the top-left pixel, and its
    RPCTransformPoint adds exactly 0.5 to the RPC result (gdal/alg/gdal_rpc.cpp: "RPCs are using the
    center of upper left pixel = 0,0 convention, convert to top left corner = 0,0 convention used in
    GDAL"). Our convention is the RPC one, so GDAL = ours + 0.5 on both axes, exactly; rasterio's
    `xy(..., offset="center")` adds the same 0.5 before calling GDAL's inverse.
    """
    model = model_of(path)
    col, row, alt, lon, lat = points_inside_image(model)
    col_ours, row_ours = model.projection(lon, lat, alt)
    with gdal_transformer(model) as transformer:
        row_gdal, col_gdal = transformer.rowcol(lon, lat, zs=alt, op=lambda v: v)
        lon_gdal, lat_gdal = transformer.xy(row, col, zs=alt, offset="center")
    row_gdal, col_gdal = np.asarray(row_gdal, float), np.asarray(col_gdal, float)
    # Projection: measured max |difference| 2.9e-11 px over all 56 files (float rounding only).
    assert np.max(np.abs(col_gdal - 0.5 - col_ours)) < 1e-9
    assert np.max(np.abs(row_gdal - 0.5 - row_ours)) < 1e-9
    # Localization: measured max 2.8e-12 deg, i.e. <= 1e-8 px once reprojected (GDAL's threshold).
    lon_gdal, lat_gdal = np.asarray(lon_gdal, float), np.asarray(lat_gdal, float)
    assert np.max(np.abs(lon_gdal - lon)) < 1e-9 and np.max(np.abs(lat_gdal - lat)) < 1e-9
    col_back, row_back = model.projection(lon_gdal, lat_gdal, alt)
    assert np.max(np.hypot(col_back - col, row_back - row)) < 1e-6


# --------------------------------------------------------------------- round trips


@pytest.mark.parametrize("path", RPC_FILES, ids=lambda p: p.name[:48])
def test_projection_localization_round_trips(path):
    model = model_of(path)
    col, row, alt, lon, lat = points_inside_image(model)
    col_back, row_back = model.projection(lon, lat, alt)
    # Measured <= 1e-9 px: float64 rounding of lon/lat in degrees, not the solver (which reaches 1e-12).
    assert np.max(np.hypot(col_back - col, row_back - row)) < 1e-6
    lon_back, lat_back = model.localization(col_back, row_back, alt)
    assert np.max(np.abs(lon_back - lon)) < 1e-9 and np.max(np.abs(lat_back - lat)) < 1e-9


def test_projection_and_localization_broadcast():
    model = model_of(REUNION / "img_01.tif")
    col, row = model.projection(np.full((3, 1), model.lon_offset), np.full((1, 4), model.lat_offset), 2300.0)
    assert col.shape == row.shape == (3, 4) and col.dtype == np.float64
    lon, lat = model.localization(np.arange(3.0)[:, None], np.arange(4.0)[None, :], 2300.0)
    assert lon.shape == lat.shape == (3, 4)
    lon0, lat0 = model.localization(10.0, 20.0, 2300.0)
    assert np.ndim(lon0) == 0 and np.allclose(model.projection(lon0, lat0, 2300.0), (10.0, 20.0), atol=1e-8)


def test_footprint_corners_project_to_the_outer_pixel_corners():
    model = model_of(REUNION / "img_01.tif")
    corners = model.footprint(2300.0)
    assert corners.shape == (4, 2)
    col, row = model.projection(corners[:, 0], corners[:, 1], 2300.0)
    assert np.allclose(col, [-0.5, 1023.5, 1023.5, -0.5], atol=1e-6)
    assert np.allclose(row, [-0.5, -0.5, 1023.5, 1023.5], atol=1e-6)


def test_incidence_is_the_same_from_tags_and_dimap_and_plausible():
    tags = model_of(REUNION / "img_01.tif")
    dimap = model_of(REUNION / "xml_variant_2019" / "rpc_01.xml")
    zenith, azimuth = tags.incidence(tags.lon_offset, tags.lat_offset, 2300.0)
    assert np.allclose((zenith, azimuth), dimap.incidence(tags.lon_offset, tags.lat_offset, 2300.0))
    assert 0.0 < zenith < 30.0 and 0.0 <= azimuth < 360.0  # Pleiades views are within ~30 deg of nadir


def test_shifted_model_is_the_crop_rpc():
    model = model_of(RPCM / "rpc_WV2.xml")
    crop = model.shifted(1000.0, 250.0)
    col, row, alt, lon, lat = points_inside_image(model, n=3, n_heights=1)
    col_crop, row_crop = crop.projection(lon, lat, alt)
    assert np.allclose(col_crop, col - 1000.0, atol=1e-8) and np.allclose(row_crop, row - 250.0, atol=1e-8)


def test_longitude_difference_wraps_across_the_antimeridian():
    d = model_of(RPCM / "rpc_WV2.xml").to_dict()
    d["lon_offset"] = 179.99
    model = RPCModel.from_dict(d)
    assert np.allclose(model.projection(-179.995, d["lat_offset"], 100.0),
                       model.projection(180.005, d["lat_offset"], 100.0), atol=1e-6)


# --------------------------------------------------------------------- serialisation


@pytest.mark.parametrize("name", ["rpc_WV2.xml", "JAX_068_001_RGB.json", "rpc_PLEIADES.xml"])
def test_dict_round_trip_through_json_is_exact(name):
    model = model_of(RPCM / name)
    again = RPCModel.from_dict(json.loads(json.dumps(model.to_dict())))
    for key, value in model.to_dict().items():
        assert np.array_equal(getattr(again, key), value) if value is not None else getattr(again, key) is None


@pytest.mark.parametrize("path", [REUNION / "xml_variant_2019" / "rpc_01.xml", RPCM / "rpc_WV3.xml", JAX_JSON,
                                  RPCM / "rpc_IKONOS.txt"], ids=lambda p: p.name)
def test_geotiff_tag_round_trip(path, tmp_path):
    """Writing `dst.rpcs = model.to_rasterio()` and reading the tif back gives the same camera."""
    model = model_of(path)
    tif = tmp_path / "with_rpc.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=16, height=12, count=1, dtype="uint8") as dst:
        dst.rpcs = model.to_rasterio()
        dst.write(np.zeros((1, 12, 16), np.uint8))
    again = read_rpc(tif)
    assert (again.width, again.height) == (16, 12)
    col, row, alt, lon, lat = points_inside_image(model, n=5)
    col_a, row_a = again.projection(lon, lat, alt)
    # GDAL stores the tag values as doubles and prints them with 15 significant digits.
    assert np.max(np.hypot(col_a - col, row_a - row)) < 1e-7


# --------------------------------------------------------------------- image -> RPC


def test_find_rpc_prefers_the_image_tags():
    model, source = find_rpc_for_image(REUNION / "img_01.tif")
    assert source == REUNION / "img_01.tif" and (model.width, model.height) == (1024, 1024)


@pytest.mark.parametrize("index", ["01", "02"])
def test_find_rpc_matches_numbered_sidecar(index):
    image = REUNION / "xml_variant_2019" / f"img_{index}.tif"
    model, source = find_rpc_for_image(image)
    assert source.name == f"rpc_{index}.xml"
    with rasterio.open(image) as src:  # the sidecar model gets the image size
        assert (model.width, model.height) == (src.width, src.height)
    assert np.array_equal(model.row_num, model_of(REUNION / f"img_{index}.tif").row_num)


def _tagless_tif(path: Path, width: int = 8, height: int = 6) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype="uint8") as dst:
        dst.write(np.zeros((1, height, width), np.uint8))
    return path


def test_find_rpc_uses_same_stem_json(tmp_path):
    image = _tagless_tif(tmp_path / "JAX_068_001_RGB.tif")
    shutil.copy(JAX_JSON, tmp_path / "JAX_068_001_RGB.json")
    model, source = find_rpc_for_image(image)
    assert source.name == "JAX_068_001_RGB.json"
    assert (model.width, model.height) == (746, 815)  # the JSON's own size wins over the stand-in tif's


def test_find_rpc_without_any_rpc_names_image_and_places(tmp_path):
    image = _tagless_tif(tmp_path / "scene_07.tif")
    (tmp_path / "scene_07.xml").write_text("<notes>not an RPC</notes>")
    with pytest.raises(MissingRPCError) as error:
        find_rpc_for_image(image)
    message = str(error.value)
    assert error.value.path == image and str(image) in message
    for looked_at in ("own RPC tags", "scene_07.RPB", "scene_07_RPC.TXT", "rpc_07.xml", "scene_07.xml (present"):
        assert looked_at in message
    assert error.value.hint
