"""One test per RPC file format (known values from the file text), GDAL's own sidecar readers as an
independent check of parsing and pixel conventions, and bad inputs (one clear error each).

Formats with no real sample in ../shared/data/real (.RPB, OSSIM keyword list, DIMAP v1 and v3) are
written here from a real model, so their readers are checked against known coefficients too.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from earthsynth.errors import InputFileError, MissingRPCError, RPCFormatError
from earthsynth.geo.rpc import RPCModel
from earthsynth.geo.rpc_readers import RPC00A_TO_RPC00B, find_rpc_for_image, read_rpc

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
RPCM = REAL / "rpcm_rpc_files"
SKYSAT = RPCM / "20191015_073816_ssc1d3_0011_basic_l1a_panchromatic_dn_RPC.TXT"
ENMAP = next(iter(sorted(RPCM.glob("ENMAP*METADATA.XML"))), RPCM / "ENMAP-missing")
pytestmark = [
    pytest.mark.skipif(not REAL.is_dir(), reason=f"real data folder {REAL} not present"),
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
]


def assert_same_model(a: RPCModel, b: RPCModel, atol: float = 0.0):
    for key in ("row_num", "row_den", "col_num", "col_den", "row_offset", "col_offset", "lat_offset",
                "lon_offset", "alt_offset", "row_scale", "col_scale", "lat_scale", "lon_scale", "alt_scale"):
        assert np.allclose(getattr(a, key), getattr(b, key), rtol=0, atol=atol), key


def tagless_tif(path: Path) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=8, height=6, count=1, dtype="uint8") as dst:
        dst.write(np.zeros((1, 6, 8), np.uint8))
    return path


def gdal_sidecar_model(image: Path) -> RPCModel:
    """What GDAL itself reads for `image` from a sidecar next to it (its metadata readers)."""
    with rasterio.open(image) as src:
        assert src.rpcs is not None, f"GDAL found no RPC sidecar for {image.name}"
        return RPCModel.from_rasterio(src.rpcs)


# --------------------------------------------------------------------- real files, known values


@pytest.mark.parametrize("name, expected", [
    (SKYSAT.name, {"col_offset": 1293.51565, "lat_scale": 1.0, ("row_num", 1): -5.03793150706338,
                   ("col_num", 6): -0.0174066859088051, ("col_den", 19): -5.04938965881774e-05}),
    ("rpc_IKONOS.txt", {"col_offset": 6334.0, "lat_scale": 0.0661, ("row_num", 1): 1.221942364020734,
                        ("col_num", 6): 2.010263011632902e-03, ("col_den", 19): 1.929684859424581e-09}),
    ("rpc_PLANET_L1A.txt", {"col_offset": 1280.40012503907, "lat_scale": -0.0234, ("row_num", 1): 0.0906856045030080,
                            ("col_num", 6): 0.0001038902381212648, ("col_den", 19): -5.877782791461196e-08}),
    ("rpc_PLANET_L1B.txt", {"col_offset": 1600.0, "row_offset": 675.0, ("col_den", 19): -5.877782791461196e-08}),
])
def test_rpc_txt_values(name, expected):
    check_values(read_rpc(RPCM / name), expected)


def check_values(model: RPCModel, expected: dict):
    for key, value in expected.items():
        got = getattr(model, key[0])[key[1]] if isinstance(key, tuple) else getattr(model, key)
        assert got == pytest.approx(value, rel=1e-15, abs=0), key


@pytest.mark.parametrize("name, expected", [
    # Inverse_Model values (the Direct_Model has SAMP_NUM_COEFF_2 = 0.9982...), offsets minus 1.
    ("rpc_PLEIADES.xml", {"col_offset": 19999.5, "row_offset": 18087.5, ("col_num", 1): 1.001823131969253,
                          ("row_den", 19): -5.361223700726976e-10}),
    ("rpc_SPOT6.xml", {"col_offset": 10975.5, "row_offset": 12387.5, ("col_num", 1): 1.010089128076644,
                       ("row_den", 19): 1.43701404884432e-14}),
])
def test_dimap_v2_values(name, expected):
    check_values(read_rpc(RPCM / name), expected)


@pytest.mark.parametrize("name, expected", [
    ("rpc_WV1.xml", {"row_offset": 13413.0, "col_offset": 17589.0, "width": 35180, "height": 26828,
                     ("col_num", 0): -1.048528e-02, ("col_num", 1): 1.023805, ("col_num", 19): 1.525427e-07}),
    ("rpc_WV2.xml", {"row_offset": 10108.0, "col_offset": 14104.0, "width": 28244, "height": 20289,
                     ("col_num", 1): 9.908708000000001e-01, ("row_den", 19): -1.706163e-08}),
    ("rpc_WV3.xml", {"row_offset": 11984.0, "width": 35180, "height": 23969,
                     ("col_num", 0): 3.592563e-03, ("col_num", 19): -2.008641e-08}),
])
def test_maxar_xml_values(name, expected):
    check_values(read_rpc(RPCM / name), expected)


def test_enmap_band_selection():
    first_vnir = read_rpc(ENMAP)
    assert (first_vnir.width, first_vnir.height) == (1000, 1024)
    check_values(first_vnir, {"row_offset": 512.0, "col_offset": 500.0, "alt_scale": 1075.6495722084,
                              ("row_num", 0): -4.459781356966484e-03, ("col_num", 1): 1.161715358206099,
                              ("col_den", 19): 3.195580646910263e-07})
    assert np.array_equal(read_rpc(ENMAP, band=1).row_num, first_vnir.row_num)
    first_swir = read_rpc(ENMAP, band=92)
    check_values(first_swir, {"alt_scale": 1075.6495727134, "lat_scale": 0.1564500085,
                              ("row_num", 0): -4.459833723328270e-03, ("row_num", 1): -1.658684951458982e-01})
    with pytest.raises(RPCFormatError, match="band 999") as error:
        read_rpc(ENMAP, band=999)
    assert error.value.path == ENMAP


def test_sat_nerf_json_values():
    model = read_rpc(RPCM / "JAX_068_001_RGB.json")
    check_values(model, {"row_offset": 405.51806724276, "col_scale": 383.009070557184, "width": 746,
                         "height": 815, ("row_num", 1): 1.515268776621, ("col_den", 19): -4.048e-09})


def test_geotiff_tag_values():
    model = read_rpc(REAL / "s2p_pair_reunion" / "img_01.tif")
    check_values(model, {"row_offset": 19403.5, "col_offset": 19999.5, ("row_num", 0): -37.284870906,
                         ("col_den", 19): 5.17836239128e-09})


# --------------------------------------------------------------------- GDAL's readers agree with ours


@pytest.mark.parametrize("source, sidecar", [
    ("rpc_WV2.xml", "scene.XML"),  # GDAL's DigitalGlobe reader: <stem>.XML with <isd><RPB>
    ("rpc_WV1.xml", "scene.XML"),
    (SKYSAT.name, "scene_RPC.TXT"),  # GDAL's _RPC.TXT reader
    ("rpc_IKONOS.txt", "scene_RPC.TXT"),
    # GDAL's Pleiades reader: IMG_<name>_R1C1.TIF <-> RPC_<name>.XML, subtracting 1 from the offsets.
    ("rpc_PLEIADES.xml", "RPC_PHR1A_P_SCENE.XML"),
    ("rpc_SPOT6.xml", "RPC_PHR1A_P_SCENE.XML"),
])
def test_gdal_sidecar_readers_agree(tmp_path, source, sidecar):
    image = tagless_tif(tmp_path / ("IMG_PHR1A_P_SCENE_R1C1.tif" if sidecar.startswith("RPC_") else "scene.tif"))
    shutil.copy(RPCM / source, tmp_path / sidecar)
    ours, found_at = find_rpc_for_image(image)
    assert found_at.name == sidecar
    assert_same_model(ours, gdal_sidecar_model(image))


# --------------------------------------------------------------------- formats written here


def write_rpb(model: RPCModel, path: Path) -> Path:
    """A Maxar .RPB as the vendor writes it."""
    lines = ['satId = "WV02";', 'bandId = "P";', 'SpecId = "RPC00B";', "BEGIN_GROUP = IMAGE",
             "\terrBias =   1.50;", "\terrRand =   0.12;"]
    for key, value in (("lineOffset", model.row_offset), ("sampOffset", model.col_offset),
                       ("latOffset", model.lat_offset), ("longOffset", model.lon_offset),
                       ("heightOffset", model.alt_offset), ("lineScale", model.row_scale),
                       ("sampScale", model.col_scale), ("latScale", model.lat_scale),
                       ("longScale", model.lon_scale), ("heightScale", model.alt_scale)):
        lines.append(f"\t{key} = {value!r};")
    for key, coefficients in (("lineNumCoef", model.row_num), ("lineDenCoef", model.row_den),
                              ("sampNumCoef", model.col_num), ("sampDenCoef", model.col_den)):
        body = ",\n\t\t\t".join(f"{c:+.15E}" for c in coefficients)
        lines.append(f"\t{key} = (\n\t\t\t{body});")
    path.write_text("\n".join(lines + ["END_GROUP = IMAGE", "END;", ""]))
    return path


def test_rpb_reader_agrees_with_source_and_gdal(tmp_path):
    source = read_rpc(RPCM / "rpc_WV3.xml")
    rpb = write_rpb(source, tmp_path / "scene.RPB")
    assert_same_model(read_rpc(rpb), source)
    image = tagless_tif(tmp_path / "scene.tif")
    assert find_rpc_for_image(image)[1] == rpb
    assert_same_model(read_rpc(rpb), gdal_sidecar_model(image))


def write_ossim_keyword_list(model: RPCModel, path: Path, polynomial_format: str = "B") -> Path:
    lines = ["image_id:  scene", f"polynomial_format:  {polynomial_format}", "type:  ossimRpcModel"]
    for key, value in (("line_off", model.row_offset), ("samp_off", model.col_offset), ("lat_off", model.lat_offset),
                       ("long_off", model.lon_offset), ("height_off", model.alt_offset),
                       ("line_scale", model.row_scale), ("samp_scale", model.col_scale),
                       ("lat_scale", model.lat_scale), ("long_scale", model.lon_scale),
                       ("height_scale", model.alt_scale)):
        lines.append(f"{key}:  {value!r}")
    for key, coefficients in (("line_num_coeff", model.row_num), ("line_den_coeff", model.row_den),
                              ("samp_num_coeff", model.col_num), ("samp_den_coeff", model.col_den)):
        ordered = list(coefficients)
        if polynomial_format == "A":  # write in RPC00A order: A[RPC00A_TO_RPC00B[i]] = B[i]
            ordered = [0.0] * 20
            for i_b, i_a in enumerate(RPC00A_TO_RPC00B):
                ordered[i_a] = coefficients[i_b]
        lines += [f"{key}_{i:02d}:  {float(c)!r}" for i, c in enumerate(ordered)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("polynomial_format", ["A", "B"])
def test_ossim_keyword_list(tmp_path, polynomial_format):
    source = read_rpc(RPCM / "rpc_WV2.xml")
    kwl = write_ossim_keyword_list(source, tmp_path / "scene.geom", polynomial_format)
    model = read_rpc(kwl)
    assert_same_model(model, source)
    assert model.col_num[1] == 9.908708000000001e-01  # known WV2 value, whatever the file order


def test_dimap_v3_uses_the_first_pixel_coordinate_it_states(tmp_path):
    """Pleiades Neo (DIMAP v3) files name their elements differently and state the coordinate of the
    top-left pixel (ImagetoGround_Validity_Domain/FIRST_COL); here it is 0, so the offsets of the
    converted file are one less than in the v2 original and both must give the same model."""
    v2 = (RPCM / "rpc_PLEIADES.xml").read_text()
    v3 = v2.replace('METADATA_FORMAT version="2.0"', 'METADATA_FORMAT version="3.0"')
    v3 = v3.replace("PHR_SENSOR", "PNEO_SENSOR").replace("Inverse_Model", "GroundtoImage_Values")
    v3 = v3.replace("Direct_Model_Validity_Domain", "ImagetoGround_Validity_Domain")
    v3 = v3.replace("Direct_Model", "ImagetoGround_Values")
    v3 = re.sub(r"<FIRST_(ROW|COL)>1</FIRST_\1>", r"<FIRST_\1>0</FIRST_\1>", v3)
    v3 = v3.replace("<SAMP_OFF>20000.5<", "<SAMP_OFF>19999.5<").replace("<LINE_OFF>18088.5<", "<LINE_OFF>18087.5<")
    (tmp_path / "RPC_PNEO3_SCENE.XML").write_text(v3)
    model = read_rpc(tmp_path / "RPC_PNEO3_SCENE.XML")
    assert_same_model(model, read_rpc(RPCM / "rpc_PLEIADES.xml"))
    image = tagless_tif(tmp_path / "IMG_PNEO3_SCENE_R1C1.tif")
    assert_same_model(model, gdal_sidecar_model(image))


def test_dimap_v1(tmp_path):
    """DIMAP v1 (layout as read by CNES shareloc): F_ROW / F_COL with 20 numerator then 20 denominator
    coefficients and RFM_Validity/<Axis>/A (scale), B (offset), 1-based like v2."""
    source = read_rpc(RPCM / "rpc_SPOT6.xml")
    numbers = lambda *arrays: " ".join(repr(float(v)) for a in arrays for v in a)  # noqa: E731
    axes = {"Row": (source.row_scale, source.row_offset + 1), "Col": (source.col_scale, source.col_offset + 1),
            "Lat": (source.lat_scale, source.lat_offset), "Lon": (source.lon_scale, source.lon_offset),
            "Alt": (source.alt_scale, source.alt_offset)}
    validity = "".join(f"<{k}><A>{a!r}</A><B>{b!r}</B></{k}>" for k, (a, b) in axes.items())
    (tmp_path / "rpc_v1.xml").write_text(
        '<?xml version="1.0"?><Dimap_Document><Metadata_Identification>'
        '<METADATA_FORMAT version="1.0">DIMAP</METADATA_FORMAT></Metadata_Identification>'
        f"<Rational_Function_Model><Global_RFM><F_ROW>{numbers(source.row_num, source.row_den)}</F_ROW>"
        f"<F_COL>{numbers(source.col_num, source.col_den)}</F_COL><RFM_Validity>{validity}</RFM_Validity>"
        "</Global_RFM></Rational_Function_Model></Dimap_Document>")
    assert_same_model(read_rpc(tmp_path / "rpc_v1.xml"), source)


def test_content_is_sniffed_not_the_extension(tmp_path):
    shutil.copy(RPCM / "rpc_WV2.xml", tmp_path / "metadata.dat")
    shutil.copy(RPCM / "JAX_068_001_RGB.json", tmp_path / "camera.txt")
    assert read_rpc(tmp_path / "metadata.dat").row_offset == 10108.0
    assert read_rpc(tmp_path / "camera.txt").width == 746


# --------------------------------------------------------------------- bad inputs


def truncated_copy(source: Path, target: Path, fraction: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def test_unsupported_xml_names_file_and_formats():
    path = RPCM / "rpc_unsupported.xml"
    with pytest.raises(RPCFormatError) as error:
        read_rpc(path)
    assert error.value.path == path and str(path) in str(error.value)
    assert "DIMAP" in str(error.value) and "RPB" in str(error.value) and "Sat-NeRF" in str(error.value)


@pytest.mark.parametrize("source, fraction", [
    (RPCM / "rpc_PLEIADES.xml", 0.6), (RPCM / "rpc_IKONOS.txt", 0.5), (RPCM / "JAX_068_001_RGB.json", 0.3),
    (RPCM / "rpc_WV2.xml", 0.9),
])
def test_truncated_text_files_raise_rpc_format_error(tmp_path, source, fraction):
    path = truncated_copy(source, tmp_path / ("cut_" + source.name), fraction)
    with pytest.raises(RPCFormatError) as error:
        read_rpc(path)
    assert error.value.path == path and error.value.hint


def test_truncated_rpb_names_missing_polynomials(tmp_path):
    full = write_rpb(read_rpc(RPCM / "rpc_WV2.xml"), tmp_path / "full.RPB").read_text()
    path = tmp_path / "cut.RPB"
    path.write_text(full[: full.index("sampNumCoef") + 40])
    with pytest.raises(RPCFormatError, match="SAMP_NUM_COEFF") as error:
        read_rpc(path)
    assert error.value.path == path


def test_truncated_tiff_raises_input_file_error(tmp_path):
    path = truncated_copy(REAL / "s2p_pair_reunion" / "img_01.tif", tmp_path / "cut.tif", 0.5)
    for reader in (read_rpc, find_rpc_for_image):
        with pytest.raises(InputFileError) as error:
            reader(path)
        assert error.value.path == path


def test_nan_coefficient_raises(tmp_path):
    text = (RPCM / "rpc_IKONOS.txt").read_text()
    path = tmp_path / "nan_RPC.TXT"
    path.write_text(re.sub(r"(LINE_NUM_COEFF_5:)\s*\S+", r"\1 nan", text))
    with pytest.raises(RPCFormatError, match="NaN") as error:
        read_rpc(path)
    assert error.value.path == path


def test_tiff_without_rpc(tmp_path):
    image = tagless_tif(tmp_path / "plain.tif")
    with pytest.raises(MissingRPCError) as error:
        read_rpc(image)
    assert error.value.path == image and "find_rpc_for_image" in error.value.hint
    with pytest.raises(MissingRPCError) as error:
        find_rpc_for_image(image)
    assert error.value.path == image and "plain.RPB" in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError):
        read_rpc(tmp_path / "nowhere.xml")
    with pytest.raises(InputFileError):
        find_rpc_for_image(tmp_path / "nowhere.tif")
