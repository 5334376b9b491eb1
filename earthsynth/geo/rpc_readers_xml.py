"""XML RPC readers: Pleiades / SPOT DIMAP (v1, v2, v3), Maxar / DigitalGlobe XML, EnMAP METADATA.XML.

The pixel-convention handling of each is explained in `rpc_readers.py`; the shifts are applied here
through `build_model(..., pixel_origin=...)`.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

from earthsynth.errors import RPCFormatError
from earthsynth.geo.rpc import RPCModel
from earthsynth.geo.rpc_readers import COEFF_KEYS, SCALAR_KEYS, build_model, parse_number, unsupported

# DIMAP v1 / v2 (Pleiades 1A/1B, SPOT 6/7) put the centre of the top-left pixel at (1, 1).
DIMAP_V2_PIXEL_ORIGIN = (1.0, 1.0)

ENMAP_DEFAULT_BAND = 1  # bandID number="1": the first VNIR band


def read_rpc_xml(text: str, path: Path, *, band: int | None = None) -> RPCModel:
    root = _parse_xml(text, path)
    if root.find(".//Global_RFM") is not None or root.find(".//Rational_Function_Model") is not None:
        return _read_dimap(root, path)
    if root.find(".//RPB/IMAGE") is not None:
        return _read_maxar_xml(root, path)
    if root.find(".//RPC/bandID") is not None:
        return _read_enmap(root, path, band)
    raise unsupported(path, f"XML with root <{root.tag}> and no known RPC element "
                            "(Global_RFM, RPB/IMAGE or RPC/bandID)")


def _parse_xml(text: str, path: Path) -> ElementTree.Element:
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise RPCFormatError(f"not well-formed XML ({error}); the file is probably truncated", path=path,
                             hint="get the original RPC file again") from None
    for element in root.iter():  # drop namespaces: vendors add them inconsistently
        if isinstance(element.tag, str) and "}" in element.tag:
            element.tag = element.tag.split("}", 1)[1]
    return root


def _text(node: ElementTree.Element | None, tag: str) -> str | None:
    child = node.find(tag) if node is not None else None
    return child.text if child is not None and child.text is not None else None


def _numbers(node, tags: dict[str, str], path, fmt) -> dict:
    """{GDAL key: float} for the XML child tags present in `node` ({GDAL key: XML tag})."""
    out = {}
    for key, tag in tags.items():
        value = _text(node, tag)
        if value is not None:
            out[key] = parse_number(value, tag, path, fmt)
    return out


def _indexed_coefficients(node, prefix: str, path, fmt, *, start: int = 1, width: int = 0) -> list[float]:
    """[prefix_1, ..., prefix_20] (or zero-padded, from `start`) as floats; missing terms are skipped,
    so that `build_model` reports a short polynomial."""
    values = []
    for i in range(start, start + 20):
        value = _text(node, f"{prefix}_{i:0{width}d}")
        if value is not None:
            values.append(parse_number(value, f"{prefix}_{i}", path, fmt))
    return values


# ---------------------------------------------------------------------- DIMAP

_DIMAP_SCALARS = {key: key for key in SCALAR_KEYS}


def _read_dimap(root, path: Path) -> RPCModel:
    rfm = root.find(".//Global_RFM")
    if rfm is None:
        rfm = root.find(".//Rational_Function_Model")
    if root.find(".//F_COL") is not None:
        return _read_dimap_v1(root, path)
    inverse = rfm.find("GroundtoImage_Values")
    fmt = "DIMAP v3"
    if inverse is None:
        inverse, fmt = rfm.find("Inverse_Model"), "DIMAP v2"
    if inverse is None:
        raise unsupported(path, "DIMAP without Inverse_Model / GroundtoImage_Values")
    validity = rfm.find("RFM_Validity")
    fields = _numbers(validity, _DIMAP_SCALARS, path, fmt)
    for key in COEFF_KEYS:
        fields[key] = _indexed_coefficients(inverse, key, path, fmt)
    return build_model(fields, path, fmt, pixel_origin=_dimap_pixel_origin(root, fmt, path))


def _dimap_pixel_origin(root, fmt: str, path) -> tuple[float, float]:
    """v2: (1, 1). v3 (Pleiades Neo) states the top-left pixel coordinate itself in
    ImagetoGround_Validity_Domain (GDAL reads FIRST_COL there; default 1 when absent)."""
    if fmt != "DIMAP v3":
        return DIMAP_V2_PIXEL_ORIGIN
    domain = root.find(".//ImagetoGround_Validity_Domain")
    first_col = _text(domain, "FIRST_COL")
    first_row = _text(domain, "FIRST_ROW")
    col = parse_number(first_col, "FIRST_COL", path, fmt) if first_col is not None else 1.0
    row = parse_number(first_row, "FIRST_ROW", path, fmt) if first_row is not None else col
    return row, col


# DIMAP v1: RFM_Validity/<Axis>/A (scale) and B (offset); F_ROW/F_COL hold 40 numbers (20 num, 20 den).
_DIMAP_V1_AXES = {"LINE": "Row", "SAMP": "Col", "LAT": "Lat", "LONG": "Lon", "HEIGHT": "Alt"}


def _read_dimap_v1(root, path: Path) -> RPCModel:
    fmt = "DIMAP v1"
    fields = {}
    validity = root.find(".//RFM_Validity")
    for gdal_axis, axis in _DIMAP_V1_AXES.items():
        node = validity.find(axis) if validity is not None else None
        for letter, kind in (("A", "SCALE"), ("B", "OFF")):
            value = _text(node, letter)
            if value is not None:
                fields[f"{gdal_axis}_{kind}"] = parse_number(value, f"{axis}/{letter}", path, fmt)
    for gdal_axis, tag in (("LINE", "F_ROW"), ("SAMP", "F_COL")):
        values = [parse_number(t, tag, path, fmt) for t in (_text(root, f".//{tag}") or "").split()]
        if len(values) == 40:
            fields[f"{gdal_axis}_NUM_COEFF"], fields[f"{gdal_axis}_DEN_COEFF"] = values[:20], values[20:]
        elif values:
            raise RPCFormatError(f"{fmt}: {tag} has {len(values)} numbers, expected 40 (20 num + 20 den)",
                                 path=path, hint="the file is truncated or corrupt")
    return build_model(fields, path, fmt, pixel_origin=DIMAP_V2_PIXEL_ORIGIN)


# ---------------------------------------------------------------------- Maxar / DigitalGlobe XML

_MAXAR_SCALARS = {
    "LINE_OFF": "LINEOFFSET", "SAMP_OFF": "SAMPOFFSET", "LAT_OFF": "LATOFFSET", "LONG_OFF": "LONGOFFSET",
    "HEIGHT_OFF": "HEIGHTOFFSET", "LINE_SCALE": "LINESCALE", "SAMP_SCALE": "SAMPSCALE",
    "LAT_SCALE": "LATSCALE", "LONG_SCALE": "LONGSCALE", "HEIGHT_SCALE": "HEIGHTSCALE",
}


def _read_maxar_xml(root, path: Path) -> RPCModel:
    """`<isd><RPB><IMAGE>` with LINEOFFSET... and LINENUMCOEFList/LINENUMCOEF (20 numbers in one
    element, or one number per element in older products). Same convention as the .RPB."""
    fmt = "Maxar XML"
    image = root.find(".//RPB/IMAGE")
    fields = _numbers(image, _MAXAR_SCALARS, path, fmt)
    for key in COEFF_KEYS:
        tag = key.replace("_", "").replace("COEFF", "COEF")  # LINE_NUM_COEFF -> LINENUMCOEF
        texts = [e.text or "" for e in image.findall(f"{tag}List/{tag}")]
        tokens = " ".join(texts).split()
        if tokens:
            fields[key] = [parse_number(t, tag, path, fmt) for t in tokens]
    width, height = _text(root.find(".//IMD"), "NUMCOLUMNS"), _text(root.find(".//IMD"), "NUMROWS")
    return build_model(fields, path, fmt, width=_optional_int(width), height=_optional_int(height))


def _optional_int(text: str | None) -> int | None:
    try:
        return int(float(text)) if text is not None else None
    except ValueError:
        return None


# ---------------------------------------------------------------------- EnMAP

_ENMAP_SCALARS = {
    "LINE_OFF": "ROW_OFF", "SAMP_OFF": "COL_OFF", "LAT_OFF": "LAT_OFF", "LONG_OFF": "LONG_OFF",
    "HEIGHT_OFF": "HEIGHT_OFF", "LINE_SCALE": "ROW_SCALE", "SAMP_SCALE": "COL_SCALE",
    "LAT_SCALE": "LAT_SCALE", "LONG_SCALE": "LONG_SCALE", "HEIGHT_SCALE": "HEIGHT_SCALE",
}


def enmap_band_numbers(root) -> list[int]:
    return [int(b.get("number", i + 1)) for i, b in enumerate(root.findall(".//RPC/bandID"))]


def _read_enmap(root, path: Path, band: int | None) -> RPCModel:
    """EnMAP L1B/L1C/L2A METADATA.XML: one RPC per spectral band under product/navigation/RPC.
    Default: band 1 (the first VNIR band); `band` picks another `bandID number`."""
    fmt = "EnMAP"
    band = ENMAP_DEFAULT_BAND if band is None else int(band)
    nodes = root.findall(".//RPC/bandID")
    chosen = [n for i, n in enumerate(nodes) if int(n.get("number", i + 1)) == band]
    if not chosen:
        numbers = enmap_band_numbers(root)
        raise RPCFormatError(f"EnMAP file has no RPC for band {band} (bands {min(numbers)}..{max(numbers)})",
                             path=path, hint="pass band= one of the listed band numbers")
    node = chosen[0]
    fields = _numbers(node, _ENMAP_SCALARS, path, fmt)
    for key, prefix in zip(COEFF_KEYS, ("ROW_NUM", "ROW_DEN", "COL_NUM", "COL_DEN")):
        fields[key] = _indexed_coefficients(node, prefix, path, fmt, width=2)
    width = _optional_int(_text(root, ".//widthOfScene"))
    height = _optional_int(_text(root, ".//heightOfScene"))
    return build_model(fields, path, f"{fmt} band {band}", width=width, height=height)

