"""GeoTIFF / COG reading and writing, on real rasters from ../shared/data/real."""

import struct
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from earthsynth.errors import ConfigError, InputFileError, SceneError
from earthsynth.io.raster import (StreamingRasterWriter, check_finite, gsd_of, pixel_centers, raster_info,
                                  read_raster, write_raster)

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
RGB_BYTE = REAL / "rasterio_coarse" / "RGB.byte.tif"
PLEIADES = REAL / "s2p_pair_reunion" / "img_01.tif"
S2P_DSM = REAL / "s2p_pair_reunion" / "expected_s2p_dsm.tif"

needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="shared real data not present")


@needs_real
def test_read_real_rgb_with_georeferencing():
    raster = read_raster(RGB_BYTE)
    assert raster.data.shape == (3, 718, 791) and raster.data.dtype == np.uint8
    assert raster.crs == "EPSG:32618" and raster.nodata == 0
    assert gsd_of(raster.transform) == pytest.approx((300.0379, 300.0417), abs=1e-3)
    assert raster.rpc is None


@needs_real
def test_read_window_and_bands_match_the_full_read():
    full = read_raster(RGB_BYTE)
    part = read_raster(RGB_BYTE, window=((100, 164), (200, 232)), bands=[3, 1])
    np.testing.assert_array_equal(part.data, full.data[[2, 0], 100:164, 200:232])
    # the window's transform puts its pixel (0, 0) where the full raster has pixel (100, 200)
    assert part.transform @ (0, 0) == pytest.approx(full.transform @ (200, 100))
    with pytest.raises(ConfigError):
        read_raster(RGB_BYTE, window=((700, 800), (0, 10)))
    with pytest.raises(ConfigError):
        read_raster(RGB_BYTE, bands=[4])


@needs_real
def test_raster_info_of_a_satellite_view_with_rpc_only():
    info = raster_info(PLEIADES)
    assert (info.width, info.height, info.count, info.dtype) == (1024, 1024, 1, "uint16")
    assert info.has_rpc and info.crs is None and info.transform is None


@needs_real
def test_rpc_tags_survive_a_write(tmp_path):
    src = read_raster(PLEIADES, window=((0, 64), (0, 64)))
    assert src.rpc is not None
    out = write_raster(tmp_path / "view.tif", src.data, rpc=src.rpc)
    with rasterio.open(PLEIADES) as a, rasterio.open(out) as b:
        original, written = a.rpcs.to_dict(), b.rpcs.to_dict()
    assert original.keys() == written.keys()
    for key, value in original.items():
        assert np.allclose(value, written[key], rtol=1e-12), key


@needs_real
def test_rpc_model_round_trip_and_window_shift(tmp_path):
    full = read_raster(PLEIADES)
    assert (full.rpc.width, full.rpc.height) == (1024, 1024)
    crop = read_raster(PLEIADES, window=((10, 42), (20, 52)))
    assert (crop.rpc.width, crop.rpc.height) == (32, 32)
    lon, lat, alt = full.rpc.lon_offset, full.rpc.lat_offset, full.rpc.alt_offset
    col_full, row_full = full.rpc.projection(lon, lat, alt)
    col_crop, row_crop = crop.rpc.projection(lon, lat, alt)
    assert (col_full - col_crop, row_full - row_crop) == pytest.approx((20, 10), abs=1e-9)
    write_raster(tmp_path / "v.tif", crop.data, rpc=crop.rpc)
    again = read_raster(tmp_path / "v.tif")
    written, expected = again.rpc.to_dict(), crop.rpc.to_dict()
    assert written.keys() == expected.keys()
    for key, value in expected.items():
        assert np.allclose(written[key], value, rtol=1e-12), key


@needs_real
@pytest.mark.parametrize("cog", [False, True])
def test_truncated_tiff_is_an_input_file_error(tmp_path, cog):
    source = PLEIADES
    if cog:   # a COG has its header first, so the truncation is only found when pixels are read
        source = write_raster(tmp_path / "full.tif", read_raster(PLEIADES).data, cog=True, compress=None)
    blob = source.read_bytes()
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputFileError) as info:
        read_raster(truncated)
    assert "truncated.tif" in str(info.value) and "What to do" in str(info.value)


def test_garbage_and_missing_files_are_input_file_errors(tmp_path):
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(np.random.default_rng(0).bytes(3000))
    for call in (read_raster, raster_info):
        with pytest.raises(InputFileError, match="garbage.tif"):
            call(garbage)
        with pytest.raises(InputFileError, match="no such file"):
            call(tmp_path / "missing.tif")


def test_write_read_round_trip_keeps_everything(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.normal(100, 10, (2, 40, 50)).astype(np.float32)
    data[1, 3, 4] = np.nan
    transform = from_origin(350000.0, 7650000.0, 0.5, 0.5)
    path = write_raster(tmp_path / "dsm.tif", data, transform=transform, crs="EPSG:32740", nodata=np.nan,
                        tags={"SOURCE": "test"}, band_descriptions=["height", "confidence"])
    raster = read_raster(path)
    np.testing.assert_array_equal(raster.data, data)
    assert raster.transform == transform and raster.crs == "EPSG:32740" and np.isnan(raster.nodata)
    assert raster.tags["SOURCE"] == "test" and raster.band_descriptions == ("height", "confidence")
    assert [p.name for p in tmp_path.iterdir()] == ["dsm.tif"]


def test_two_d_input_is_one_band_and_no_transform_means_not_georeferenced(tmp_path):
    data = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30)
    raster = read_raster(write_raster(tmp_path / "a.tif", data))
    assert raster.data.shape == (1, 20, 30) and raster.transform is None and raster.crs is None
    np.testing.assert_array_equal(raster.data[0], data)


def _tiff_ifds(path: Path) -> list[dict]:
    """Walk a classic or Big TIFF's IFD chain by hand: one {tag: first value} dict per IFD."""
    blob = path.read_bytes()
    order = {b"II": "<", b"MM": ">"}[blob[:2]]
    big = struct.unpack(order + "H", blob[2:4])[0] == 43
    count_fmt, entry_size, offset_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    offset = struct.unpack(order + offset_fmt, blob[(8 if big else 4):(16 if big else 8)])[0]
    ifds = []
    while offset:
        n = struct.unpack_from(order + count_fmt, blob, offset)[0]
        start = offset + (8 if big else 2)
        tags = {}
        for i in range(n):
            tag, kind = struct.unpack_from(order + "HH", blob, start + i * entry_size)
            value_at = start + i * entry_size + (12 if big else 8)
            tags[tag] = struct.unpack_from(order + ("H" if kind == 3 else "I"), blob, value_at)[0]
        ifds.append(tags)
        offset = struct.unpack_from(order + offset_fmt, blob, start + n * entry_size)[0]
    return ifds


def test_cog_layout_tiled_with_overviews(tmp_path):
    yy, xx = np.mgrid[0:1024, 0:1024]
    data = np.stack([xx % 256, yy % 256, (xx + yy) % 256]).astype(np.uint8)
    path = write_raster(tmp_path / "ortho.tif", data, transform=from_origin(0, 1024, 1, 1), crs="EPSG:32633",
                        cog=True, block=256)
    info = raster_info(path)
    assert info.layout == "COG" and info.tiled and info.block_shape == (256, 256)
    assert info.overview_factors == (2, 4) and info.compression == "DEFLATE"
    ifds = _tiff_ifds(path)
    assert len(ifds) == 3                                   # full resolution + two overviews
    assert all(322 in ifd and ifd[322] == 256 for ifd in ifds)   # TileWidth in every IFD
    assert [ifd.get(254, 0) & 1 for ifd in ifds] == [0, 1, 1]    # NewSubfileType: reduced-resolution
    assert b"LAYOUT=IFDS_BEFORE_DATA" in path.read_bytes()[:1000]  # GDAL's COG ghost header
    np.testing.assert_array_equal(read_raster(path).data, data)
    assert [p.name for p in tmp_path.iterdir()] == ["ortho.tif"]


def test_cog_validates_with_rio_cogeo(tmp_path):
    cogeo = pytest.importorskip("rio_cogeo.cogeo")
    data = np.random.default_rng(2).integers(0, 255, (1, 600, 700), dtype=np.uint8)
    path = write_raster(tmp_path / "c.tif", data, transform=from_origin(0, 0, 1, 1), crs="EPSG:3857", cog=True)
    valid, errors, warnings = cogeo.cog_validate(str(path))
    assert valid and not errors, (errors, warnings)


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def test_streaming_writer_does_not_hold_the_image_in_memory(tmp_path):
    size, block = 8192, 512                                 # 8192 x 8192 x 3 uint8 = 192 MiB
    stripes = (np.arange(block)[None, :] % 7).astype(np.uint8)
    can_measure = _reset_peak_rss()
    rss_before = _peak_rss_mb()
    path = tmp_path / "big.tif"
    with StreamingRasterWriter(path, size, size, 3, "uint8", transform=from_origin(0, size, 0.5, 0.5),
                               crs="EPSG:32633", block=block) as out:
        for row in range(0, size, block):
            for col in range(0, size, block):
                tile = np.empty((3, block, block), np.uint8)
                tile[0], tile[1], tile[2] = row // block, col // block, stripes
                out.write_window(row, col, tile)
        assert not path.exists()                           # only a temporary until the `with` ends
    if can_measure:
        assert _peak_rss_mb() - rss_before < 96, "streaming held too much of the image in memory"
    info = raster_info(path)
    assert info.layout == "COG" and (info.width, info.height, info.count) == (size, size, 3)
    for row_block, col_block in [(0, 0), (5, 11), (15, 15)]:
        window = ((row_block * block, row_block * block + 4), (col_block * block + 7, col_block * block + 14))
        values = read_raster(path, window=window).data
        assert (values[0] == row_block).all() and (values[1] == col_block).all()
        np.testing.assert_array_equal(values[2, 0], np.arange(7, 14) % 7)
    assert [p.name for p in tmp_path.iterdir()] == ["big.tif"]


def test_streaming_writer_leaves_nothing_after_an_exception(tmp_path):
    with pytest.raises(RuntimeError):
        with StreamingRasterWriter(tmp_path / "x.tif", 64, 64, 1, "float32", transform=from_origin(0, 0, 1, 1),
                                   crs="EPSG:4326", block=16) as out:
            out.write_window(0, 0, np.ones((16, 16), np.float32))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_streaming_writer_refuses_bad_windows(tmp_path):
    with StreamingRasterWriter(tmp_path / "y.tif", 32, 32, 1, "uint8", cog=False, block=16) as out:
        with pytest.raises(ConfigError, match="outside"):
            out.write_window(20, 0, np.zeros((16, 16), np.uint8))
        with pytest.raises(ConfigError, match="clamping"):
            out.write_window(0, 0, np.zeros((16, 16), np.float64))
        out.write_window(0, 0, np.full((16, 16), 7, np.uint8))
    assert read_raster(tmp_path / "y.tif").data[0, 15, 15] == 7


def test_pixel_centers_follow_the_centre_convention():
    transform = from_origin(100.0, 200.0, 0.5, 0.5)
    x, y = pixel_centers(transform, 3, 4)
    assert x.shape == (3, 4)
    assert (x[0, 0], y[0, 0]) == (100.25, 199.75)
    assert (x[2, 3], y[2, 3]) == (101.75, 198.75)
    assert gsd_of(transform) == (0.5, 0.5)


@needs_real
def test_check_finite_on_real_dsm_and_with_nan():
    dsm = read_raster(S2P_DSM)
    check_finite(dsm.data[:, :, :0] if np.isnan(dsm.data).any() else dsm.data, S2P_DSM)
    data = np.zeros((1, 4, 4), np.float32)
    data[0, 2, 1] = np.nan
    with pytest.raises(SceneError, match=r"1 of 16 pixels .*\(0, 2, 1\)"):
        check_finite(data, "dsm.tif")
    with pytest.raises(InputFileError, match="dsm.tif"):
        check_finite(data, "dsm.tif", error=InputFileError)
    check_finite(np.zeros((2, 2), np.uint8), "ints.tif")     # integers cannot be NaN
