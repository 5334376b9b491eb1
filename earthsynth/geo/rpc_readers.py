"""Read RPC models from every common file format, and find the RPC of an image.

`read_rpc(path)` sniffs the content (not the extension) and dispatches:

- raster files (GeoTIFF tag 50844, NITF RPC00B TREs...) through rasterio / GDAL;
- XML: Pleiades / SPOT 6-7 DIMAP v1, v2 and Pleiades Neo DIMAP v3, Maxar / DigitalGlobe XML (WV1/2/3,
  GE1...), EnMAP METADATA.XML (see `rpc_readers_xml.py`);
- Maxar / DigitalGlobe `.RPB` (`lineOffset = ...;` blocks);
- `*_RPC.TXT` key: value files (IKONOS, GeoEye, SkySat, PlanetScope; the format GDAL reads);
- OSSIM keyword lists (`line_num_coeff_00: ...`, `polynomial_format: A|B`);
- JSON: Sat-NeRF / DFC2019 metadata (`{"rpc": {"row_offset": ...}}`), `RPCModel.to_dict()` output,
  or `rasterio.rpc.RPC.to_dict()` output.

Every reader returns an `RPCModel` in the project convention (0-based, (0, 0) = centre of the top-left
pixel, RPC00B term order). Per-format pixel conventions, applied here and proved by tests/test_rpc.py:

- GeoTIFF / NITF / RPB / _RPC.TXT / Maxar XML / OSSIM / JSON: already 0-based pixel centres, no shift
  (GDAL reads them without shift and documents that convention in gdal_rpc.cpp).
- DIMAP v1 / v2 (Pleiades 1A/1B, SPOT 6/7): the centre of the top-left pixel is (1, 1), so 1 is
  subtracted from LINE_OFF / SAMP_OFF (as GDAL's Pleiades metadata reader and rpcm do).
- DIMAP v3 (Pleiades Neo): the file states the top-left pixel coordinate in
  ImagetoGround_Validity_Domain/FIRST_ROW, FIRST_COL; that value is subtracted (as GDAL does).
- EnMAP: taken as 0-based pixel centres like the GDAL convention (rpcm does the same; no public image
  to verify it against).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import replace
from pathlib import Path

from earthsynth.errors import InputFileError, MissingRPCError, RPCFormatError
from earthsynth.geo.rpc import RPCModel

SUPPORTED_FORMATS = (
    "GeoTIFF/NITF with RPC tags (GDAL)",
    "Pleiades/SPOT6-7 DIMAP XML (v1, v2) and Pleiades Neo DIMAP v3",
    "Maxar/DigitalGlobe XML (WV1/2/3, GE1)",
    "Maxar/DigitalGlobe .RPB",
    "*_RPC.TXT key: value (IKONOS, SkySat, PlanetScope)",
    "EnMAP METADATA.XML (one RPC per band)",
    "OSSIM keyword list (line_num_coeff_00: ...)",
    "Sat-NeRF / DFC2019 JSON ({'rpc': {'row_offset': ...}})",
)
_SUPPORTED_HINT = "supported RPC formats: " + "; ".join(SUPPORTED_FORMATS)

SCALAR_KEYS = ("LINE_OFF", "SAMP_OFF", "LAT_OFF", "LONG_OFF", "HEIGHT_OFF",
               "LINE_SCALE", "SAMP_SCALE", "LAT_SCALE", "LONG_SCALE", "HEIGHT_SCALE")
COEFF_KEYS = ("LINE_NUM_COEFF", "LINE_DEN_COEFF", "SAMP_NUM_COEFF", "SAMP_DEN_COEFF")

# NITF RPC00A lists the monomials in another order than RPC00B; B[i] = A[RPC00A_TO_RPC00B[i]].
RPC00A_TO_RPC00B = (0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 7, 11, 12, 13, 14, 15, 16, 17, 18, 19)

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def parse_number(text, key: str, path, fmt: str) -> float:
    """First token of `text` as a float (IKONOS writes '+005124.00 pixels'); RPCFormatError if not."""
    try:
        return float(str(text).split()[0])
    except (ValueError, IndexError):
        raise RPCFormatError(f"{fmt}: value of {key} is not a number: {str(text)[:40]!r}", path=path,
                             hint="the file is corrupt or truncated; get the original RPC file again") from None


def build_model(fields: dict, path, fmt: str, *, pixel_origin=(0.0, 0.0),
                width: int | None = None, height: int | None = None) -> RPCModel:
    """`RPCModel` from GDAL-named fields (scalars and 20-coefficient lists).

    `pixel_origin` = (row, col) that the file gives to the centre of the top-left pixel; it is
    subtracted from LINE_OFF / SAMP_OFF to reach the 0-based convention.
    """
    missing = [k for k in SCALAR_KEYS + COEFF_KEYS if k not in fields]
    if missing:
        raise RPCFormatError(f"{fmt} RPC is incomplete: missing {', '.join(missing)}", path=path,
                             hint="the file is truncated or not a complete RPC; get the original file again")
    short = [k for k in COEFF_KEYS if len(fields[k]) != 20]
    if short:
        counts = ", ".join(f"{k} has {len(fields[k])}" for k in short)
        raise RPCFormatError(f"{fmt} RPC: expected 20 coefficients per polynomial, but {counts}", path=path,
                             hint="the file is truncated or corrupt; get the original file again")
    try:
        return RPCModel(
            row_num=fields["LINE_NUM_COEFF"], row_den=fields["LINE_DEN_COEFF"],
            col_num=fields["SAMP_NUM_COEFF"], col_den=fields["SAMP_DEN_COEFF"],
            row_offset=fields["LINE_OFF"] - pixel_origin[0], col_offset=fields["SAMP_OFF"] - pixel_origin[1],
            lat_offset=fields["LAT_OFF"], lon_offset=fields["LONG_OFF"], alt_offset=fields["HEIGHT_OFF"],
            row_scale=fields["LINE_SCALE"], col_scale=fields["SAMP_SCALE"], lat_scale=fields["LAT_SCALE"],
            lon_scale=fields["LONG_SCALE"], alt_scale=fields["HEIGHT_SCALE"], width=width, height=height)
    except RPCFormatError as error:
        raise RPCFormatError(f"{fmt} RPC: {error}", path=path,
                             hint="the coefficients are unusable; get the original file again") from None


def unsupported(path, what: str) -> RPCFormatError:
    return RPCFormatError(f"not a supported RPC file ({what})", path=path, hint=_SUPPORTED_HINT)


# ---------------------------------------------------------------------- dispatch


def read_rpc(path, *, band: int | None = None) -> RPCModel:
    """Read the RPC stored in `path`, whatever its format (sniffed from the content).

    `band` selects the model in files that hold one per band (EnMAP: the `bandID number`; default 1,
    the first VNIR band); other formats ignore it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError("RPC file not found", path=path, hint="check the path")
    try:
        head = path.open("rb").read(4096)
    except OSError as error:
        raise InputFileError(f"cannot read the file: {error}", path=path, hint="check its permissions") from None
    if head.startswith(_TIFF_MAGICS) or head[:4] in (b"NITF", b"NSIF") or b"\x00" in head:
        return _read_raster_rpc(path)
    text = _read_text(path)
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("<"):
        from earthsynth.geo.rpc_readers_xml import read_rpc_xml

        return read_rpc_xml(stripped, path, band=band)
    if stripped.startswith(("{", "[")):
        return _read_json_rpc(stripped, path)
    return _read_text_rpc(text, path)


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # e.g. SPOT6 DIMAP declares ISO-8859-1


def _open_raster(path: Path):
    """Open with rasterio *without* letting GDAL pick up sidecar RPC files (.RPB, _RPC.TXT, DIMAP):
    the image's own tags must be told apart from a sidecar, whose convention we handle ourselves."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # raw satellite images have no geotransform
            with rasterio.open(path) as src:
                return src.rpcs, src.width, src.height
    except RasterioIOError as error:
        raise InputFileError(f"cannot be opened as a raster: {error}", path=path,
                             hint="the file is truncated or not an image; copy it again") from None


def _read_raster_rpc(path: Path) -> RPCModel:
    rpcs, width, height = _open_raster(path)
    if rpcs is None:
        raise MissingRPCError("the raster has no RPC tags", path=path,
                              hint="use find_rpc_for_image() to look for a sidecar RPC file next to it")
    try:
        return RPCModel.from_rasterio(rpcs, width=width, height=height)
    except RPCFormatError as error:
        raise RPCFormatError(f"GeoTIFF RPC tags: {error}", path=path, hint="the RPC tags are corrupt") from None


# ---------------------------------------------------------------------- JSON


def _read_json_rpc(text: str, path: Path) -> RPCModel:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise RPCFormatError(f"not valid JSON ({error.msg} at line {error.lineno}); truncated?", path=path,
                             hint="get the original JSON file again") from None
    if not isinstance(document, dict):
        raise unsupported(path, "a JSON file whose top level is not an object")
    rpc = document.get("rpc", document)
    if not isinstance(rpc, dict):
        raise unsupported(path, "JSON 'rpc' entry is not an object")
    width = rpc.get("width", document.get("width"))
    height = rpc.get("height", document.get("height"))
    try:
        if "row_num" in rpc:  # Sat-NeRF / DFC2019 / rpcm / RPCModel.to_dict()
            return RPCModel.from_dict({**rpc, "width": width, "height": height})
        if "line_num_coeff" in rpc:  # rasterio.rpc.RPC.to_dict()
            from rasterio.rpc import RPC

            fields = {k: rpc[k] for k in ("height_off", "height_scale", "lat_off", "lat_scale", "line_den_coeff",
                                          "line_num_coeff", "line_off", "line_scale", "long_off", "long_scale",
                                          "samp_den_coeff", "samp_num_coeff", "samp_off", "samp_scale")}
            return RPCModel.from_rasterio(RPC(**fields), width=width, height=height)
    except (RPCFormatError, TypeError, ValueError, KeyError) as error:
        raise RPCFormatError(f"JSON RPC: {error}", path=path, hint="the RPC entry is incomplete or corrupt") from None
    raise unsupported(path, "JSON without an 'rpc' object holding row_num/col_num coefficients")


# ---------------------------------------------------------------------- text formats


def _read_text_rpc(text: str, path: Path) -> RPCModel:
    if re.search(r"^\s*(lineNumCoef|BEGIN_GROUP)\s*=", text, re.IGNORECASE | re.MULTILINE):
        return _read_rpb(text, path)
    pairs = _key_value_pairs(text)
    if "LINE_NUM_COEFF_00" in pairs or "SAMP_NUM_COEFF_00" in pairs:
        return _read_ossim_keyword_list(pairs, path)
    if any(k.startswith(("LINE_NUM_COEFF", "SAMP_NUM_COEFF", "LINE_OFF")) for k in pairs):
        return _read_key_value_rpc(pairs, path)
    raise unsupported(path, "text without RPC keys")


def _key_value_pairs(text: str) -> dict[str, str]:
    """`KEY: value` lines -> {KEY (upper case, without any 'prefix.'): value text}."""
    pairs = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = re.sub(r"[^A-Za-z0-9_.]", "", key).rsplit(".", 1)[-1].upper()
        if key:
            pairs[key] = value.strip()
    return pairs


def _read_key_value_rpc(pairs: dict[str, str], path: Path) -> RPCModel:
    """IKONOS / GeoEye / SkySat / PlanetScope `*_RPC.TXT`: LINE_OFF: ..., LINE_NUM_COEFF_1..20: ..."""
    fmt = "_RPC.TXT"
    fields = {k: parse_number(pairs[k], k, path, fmt) for k in SCALAR_KEYS if k in pairs}
    for key in COEFF_KEYS:
        values = [pairs.get(f"{key}_{i}") for i in range(1, 21)]
        present = [v for v in values if v is not None]
        if present:
            if len(present) < 20:
                absent = [f"{key}_{i + 1}" for i, v in enumerate(values) if v is None]
                raise RPCFormatError(f"{fmt} RPC is incomplete: missing {', '.join(absent[:5])}"
                                     f"{' ...' if len(absent) > 5 else ''}", path=path,
                                     hint="the file is truncated; get the original file again")
            fields[key] = [parse_number(v, key, path, fmt) for v in values]
    return build_model(fields, path, fmt)


def _read_ossim_keyword_list(pairs: dict[str, str], path: Path) -> RPCModel:
    """OSSIM `.geom` keyword list (ossimRpcModel): line_off:, line_num_coeff_00..19:, and
    polynomial_format: A (NITF RPC00A term order) or B (RPC00B, the default)."""
    fmt = "OSSIM keyword list"
    fields = {k: parse_number(pairs[k], k, path, fmt) for k in SCALAR_KEYS if k in pairs}
    order_is_a = pairs.get("POLYNOMIAL_FORMAT", "B").strip().upper().startswith("A")
    for key in COEFF_KEYS:
        values = [pairs.get(f"{key}_{i:02d}") for i in range(20)]
        if any(v is None for v in values):
            continue  # build_model reports the whole polynomial as missing
        coefficients = [parse_number(v, key, path, fmt) for v in values]
        fields[key] = [coefficients[i] for i in RPC00A_TO_RPC00B] if order_is_a else coefficients
    return build_model(fields, path, fmt)


_RPB_KEYS = {
    "LINEOFFSET": "LINE_OFF", "SAMPOFFSET": "SAMP_OFF", "LATOFFSET": "LAT_OFF", "LONGOFFSET": "LONG_OFF",
    "HEIGHTOFFSET": "HEIGHT_OFF", "LINESCALE": "LINE_SCALE", "SAMPSCALE": "SAMP_SCALE", "LATSCALE": "LAT_SCALE",
    "LONGSCALE": "LONG_SCALE", "HEIGHTSCALE": "HEIGHT_SCALE", "LINENUMCOEF": "LINE_NUM_COEFF",
    "LINEDENCOEF": "LINE_DEN_COEFF", "SAMPNUMCOEF": "SAMP_NUM_COEFF", "SAMPDENCOEF": "SAMP_DEN_COEFF",
}


def _read_rpb(text: str, path: Path) -> RPCModel:
    """Maxar / DigitalGlobe `.RPB`: `lineOffset = 13620;` and `lineNumCoef = (c1, ..., c20);`."""
    fmt = "RPB"
    fields = {}
    for match in re.finditer(r"(\w+)\s*=\s*(\([^)]*\)|[^;\n]*);", text):
        key = _RPB_KEYS.get(match.group(1).upper())
        if key is None:
            continue
        value = match.group(2).strip()
        if key in COEFF_KEYS:
            tokens = [t for t in re.split(r"[\s,()]+", value) if t]
            fields[key] = [parse_number(t, key, path, fmt) for t in tokens]
        else:
            fields[key] = parse_number(value, key, path, fmt)
    return build_model(fields, path, fmt)


# ---------------------------------------------------------------------- image -> RPC


def sidecar_candidates(image_path) -> list[Path]:
    """Where an image's RPC may lie next to it, in the order they are tried."""
    image_path = Path(image_path)
    stem, folder = image_path.stem, image_path.parent
    names = [f"{stem}.RPB", f"{stem}_RPC.TXT", f"{stem}.rpc", f"{stem}_rpc.txt", f"{stem}.xml", f"{stem}.json"]
    if stem.upper().startswith("IMG_"):  # Pleiades: IMG_PHR1A_..._R1C1.TIF <-> RPC_PHR1A_....XML
        names.append("RPC_" + re.sub(r"_R\d+C\d+$", "", stem[4:]) + ".XML")
    number = re.search(r"(\d+)$", stem)
    if number:  # s2p test layout: img_01.tif <-> rpc_01.xml
        names += [f"rpc_{number.group(1)}.{ext}" for ext in ("xml", "txt", "rpb", "json")]
    return [folder / name for name in names]


def _existing_case_insensitive(candidates: list[Path]) -> dict[Path, Path | None]:
    listings: dict[Path, dict[str, str]] = {}
    found = {}
    for candidate in candidates:
        folder = candidate.parent
        if folder not in listings:
            try:
                listings[folder] = {name.lower(): name for name in os.listdir(folder)}
            except OSError:
                listings[folder] = {}
        actual = listings[folder].get(candidate.name.lower())
        found[candidate] = folder / actual if actual else None
    return found


def find_rpc_for_image(tif_path) -> tuple[RPCModel, Path]:
    """The RPC of an image and the file it came from: the image's own RPC tags, else the first
    readable sidecar among `sidecar_candidates(tif_path)`. A sidecar model gets the image size."""
    tif_path = Path(tif_path)
    if not tif_path.is_file():
        raise InputFileError("image not found", path=tif_path, hint="check the path")
    rpcs, width, height = _open_raster(tif_path)
    if rpcs is not None:
        return _read_raster_rpc(tif_path), tif_path
    looked = ["its own RPC tags (none)"]
    for candidate, actual in _existing_case_insensitive(sidecar_candidates(tif_path)).items():
        if actual is None or actual == tif_path:
            looked.append(f"{candidate.name} (absent)")
            continue
        try:
            model = read_rpc(actual)
        except (RPCFormatError, MissingRPCError, InputFileError) as error:
            looked.append(f"{actual.name} (present, unreadable: {str(error).splitlines()[0]})")
            continue
        if model.width is None or model.height is None:
            model = replace(model, width=width, height=height)
        return model, actual
    raise MissingRPCError("the image has no RPC; looked at " + ", ".join(looked), path=tif_path,
                          hint="put the RPC next to the image (same stem, e.g. .RPB, _RPC.TXT, .xml, .json) "
                               "or write it into the GeoTIFF tags (dst.rpcs = model.to_rasterio())")
