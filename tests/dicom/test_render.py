"""Rendering (PS3.18 8.3.5.1, PS3.3 C.11): every pydicom test file our decoders
handle, rendered to PNG and compared with an independent rendering built from
pydicom's pixel_array and its LUT helpers; window formulas against values
computed by hand; viewport, parameters and encoders."""

from __future__ import annotations

import io
import os
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.data.data_manager import DATA_ROOT, external_data_sources
from pydicom.dataset import Dataset
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_windowing,
    convert_color_space,
)

from gateway.dicom.codecs import CodecError, decoded_photometric
from gateway.dicom.frames import PixelDataError, pixel_info
from gateway.dicom.part10 import read_part10
from gateway.dicom.render import (
    DisplayAttributes,
    Lut,
    RenderError,
    RenderParams,
    Viewport,
    apply_viewport,
    parse_quality,
    parse_viewport,
    parse_window,
    render_frame,
    to_display,
    voi_window,
)
from gateway.dicom.walker import DicomParseError

PHOTOMETRICS = {"MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR"}


def _local_test_files() -> list[str]:
    """pydicom's test files and those of installed data sources (pydicom-data),
    without the download attempts of `get_testdata_files` (slow offline)."""
    paths = {os.path.basename(p): str(p) for p in (Path(DATA_ROOT) / "test_files").glob("*")}
    for source in external_data_sources().values():
        for path in source.get_paths("*", 0):
            paths.setdefault(os.path.basename(path), str(path))
    return sorted(paths.values(), key=os.path.basename)


@cache
def _pixel_files() -> tuple[tuple[str, str, int], ...]:
    """(path, photometric, frame) for each pydicom test file with Pixel Data
    that `read_part10` and `pixel_info` accept: the first and last frame."""
    found = []
    for path in _local_test_files():
        if not os.path.isfile(path):
            continue
        try:
            info = pixel_info(read_part10(Path(path).read_bytes()))
        except (ValueError, IndexError):
            continue
        if info.photometric_interpretation not in PHOTOMETRICS:
            continue
        for frame in sorted({0, info.number_of_frames - 1}):
            found.append((path, info.photometric_interpretation, frame))
    return tuple(found)


def _id(case: tuple[str, str, int]) -> str:
    return f"{os.path.basename(case[0])}-{case[2]}"


def _flatten_functional_groups(ds: Dataset, frame: int) -> None:
    """Copy the Pixel Value Transformation and Frame VOI LUT macros of
    `frame` (per-frame first, else shared) to the top level."""
    for groups, index in (
        ("SharedFunctionalGroupsSequence", 0),
        ("PerFrameFunctionalGroupsSequence", frame),
    ):
        items = ds.get(groups)
        if not items or index >= len(items):
            continue
        for macro in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            nested = items[index].get(macro)
            if nested:
                for element in nested[0]:
                    ds[element.tag] = element


def _reference(path: str, frame: int) -> np.ndarray[Any, Any]:
    """Independent rendering with pydicom: 0..255 floats, not rounded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
        ds.pixel_array_options(as_rgb=False)
        try:
            arr = ds.pixel_array
        except Exception:
            pytest.skip("pydicom cannot decode this file here")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[frame]
    photometric = ds.PhotometricInterpretation
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        _flatten_functional_groups(ds, frame)
        values = apply_modality_lut(arr, ds).astype(np.float64)
        if "WindowCenter" in ds and "WindowWidth" in ds:
            window = Dataset()  # 0..255 output range (pydicom: from BitsStored)
            window.BitsStored = 8
            window.PhotometricInterpretation = "MONOCHROME2"  # we invert below
            window.PixelRepresentation = 0
            center, width = ds.WindowCenter, ds.WindowWidth
            window.WindowCenter = center[0] if isinstance(center, list | tuple) else center
            window.WindowWidth = width[0] if isinstance(width, list | tuple) else width
            if "VOILUTFunction" in ds:
                window.VOILUTFunction = ds.VOILUTFunction
            out = apply_windowing(values, window).astype(np.float64)
        elif "VOILUTSequence" in ds:
            bits = ds.VOILUTSequence[0].LUTDescriptor[2]
            out = apply_voi(arr, ds).astype(np.float64) * 255 / (2**bits - 1)
        else:
            low, high = values.min(), values.max()
            out = (values - low) * 255 / (high - low) if high > low else values * 0
        return 255 - out if photometric == "MONOCHROME1" else out
    if photometric == "PALETTE COLOR":
        bits = ds.RedPaletteColorLookupTableDescriptor[2]
        if not ds.original_encoding[1]:  # pydicom reads OW LUT bytes as little endian
            for colour in ("Red", "Green", "Blue"):
                keyword = f"{colour}PaletteColorLookupTableData"
                if keyword in ds:
                    raw = np.frombuffer(ds[keyword].value, dtype=">u2")
                    ds[keyword].value = raw.astype("<u2").tobytes()
        return apply_color_lut(arr, ds).astype(np.float64) * 255 / (2**bits - 1)
    if photometric.startswith("YBR_FULL"):
        arr = convert_color_space(arr, photometric, "RGB")
    return arr.astype(np.float64) * 255 / (2 ** int(ds.BitsStored) - 1)


def _render_png(path: str, frame: int) -> np.ndarray[Any, Any]:
    try:
        png = render_frame(Path(path).read_bytes(), frame, RenderParams(media_type="image/png"))
    except (CodecError, PixelDataError, DicomParseError) as exc:  # not handled by our decoders
        pytest.skip(f"not decodable here: {exc}")
    return np.asarray(Image.open(io.BytesIO(png)))


def test_every_photometric_interpretation_is_covered() -> None:
    assert {case[1] for case in _pixel_files()} == PHOTOMETRICS


@pytest.mark.parametrize("case", _pixel_files(), ids=_id)
def test_render_matches_pydicom(case: tuple[str, str, int]) -> None:
    path, photometric, frame = case
    ours = _render_png(path, frame).astype(np.float64)
    reference = np.floor(_reference(path, frame) + 0.5)
    assert ours.shape == reference.shape
    info = pixel_info(read_part10(Path(path).read_bytes()))
    lossy_colour = photometric != decoded_photometric(info) and "YBR" in photometric
    # Two JPEG decoders (and two YCbCr conversions) may differ slightly.
    limit = 2.0 if lossy_colour else 1.0
    assert np.abs(ours - reference).mean() <= limit


# ---------------------------------------------------------------- formulas


def test_linear_window_formula() -> None:
    # PS3.3 C.11.2.1.2.1, c=50, w=11: below 44.5 -> 0, above 54.5 -> 255.
    x = np.array([0.0, 44.5, 44.6, 49.5, 54.5, 54.6, 100.0])
    y = voi_window(x, (50.0, 11.0, "linear"))
    np.testing.assert_allclose(y, [0, 0, 2.55, 127.5, 255, 255, 255], atol=1e-9)


def test_linear_exact_window_formula() -> None:
    # PS3.3 C.11.2.1.3.2, c=50, w=10: y = ((x - 50) / 10 + 0.5) * 255.
    x = np.array([44.0, 45.0, 46.0, 50.0, 52.5, 55.0, 56.0])
    y = voi_window(x, (50.0, 10.0, "linear-exact"))
    np.testing.assert_allclose(y, [0, 0, 25.5, 127.5, 191.25, 255, 255], atol=1e-9)


def test_sigmoid_window_formula() -> None:
    # PS3.3 C.11.2.1.3.1: y = 255 / (1 + exp(-4 (x - c) / w)); exp(-2) = 0.135335283
    x = np.array([50.0, 55.0, 45.0])
    y = voi_window(x, (50.0, 10.0, "sigmoid"))
    np.testing.assert_allclose(y, [127.5, 224.6033, 30.3967], atol=1e-3)


def _grey(photometric: str = "MONOCHROME2", **kwargs: Any) -> DisplayAttributes:
    return DisplayAttributes(photometric=photometric, bits_stored=16, **kwargs)


def test_request_window_beats_instance_window_and_rescale_applies() -> None:
    pixels = np.array([[0, 10], [20, 30]], dtype=np.int16)
    attrs = _grey(rescale_slope=2.0, rescale_intercept=-10.0, window=(0.0, 2.0, "linear"))
    # values -10, 10, 30, 50; request window 20 +- 20 exact
    out = to_display(pixels, attrs, RenderParams(window=(20.0, 40.0, "linear-exact")))
    assert out.tolist() == [[0, 64], [191, 255]]
    out = to_display(pixels, attrs, RenderParams())  # instance window: 0 +- 1
    assert out.tolist() == [[0, 255], [255, 255]]


def test_min_max_when_no_window_and_monochrome1_inverts() -> None:
    pixels = np.array([[-1000, 0], [1000, 3000]], dtype=np.int16)
    assert to_display(pixels, _grey(), RenderParams()).tolist() == [[0, 64], [128, 255]]
    inverted = to_display(pixels, _grey("MONOCHROME1"), RenderParams())
    assert inverted.tolist() == [[255, 191], [127, 0]]


def test_unsigned_high_bits_are_not_pixel_data() -> None:
    pixels = np.array([[0xF000, 0xF0FF]], dtype=np.uint16)  # overlay bits above bit 11
    attrs = DisplayAttributes(photometric="MONOCHROME2", bits_stored=12)
    assert to_display(pixels, attrs, RenderParams()).tolist() == [[0, 255]]


def test_modality_and_voi_lut_sequences() -> None:
    pixels = np.array([[-5, 0, 1, 2, 9]], dtype=np.int16)
    modality = Lut(first_mapped=0, bits=16, data=np.array([100, 200, 300], dtype=np.uint16))
    voi = Lut(first_mapped=100, bits=8, data=np.linspace(0, 255, 201).astype(np.uint16))
    attrs = _grey(modality_lut=modality, voi_lut=voi)
    assert to_display(pixels, attrs, RenderParams()).tolist() == [[0, 0, 127, 255, 255]]


def test_palette_8_and_16_bit_entries() -> None:
    ramp8 = Lut(first_mapped=0, bits=8, data=np.arange(256, dtype=np.uint8))
    zero8 = Lut(first_mapped=0, bits=8, data=np.zeros(256, dtype=np.uint8))
    pixels = np.array([[0, 128, 255]], dtype=np.uint8)
    attrs = DisplayAttributes("PALETTE COLOR", 8, palette=(ramp8, zero8, ramp8))
    out = to_display(pixels, attrs, RenderParams())
    assert out.tolist() == [[[0, 0, 0], [128, 0, 128], [255, 0, 255]]]
    ramp16 = Lut(first_mapped=10, bits=16, data=np.array([0, 65535], dtype=np.uint16))
    attrs = DisplayAttributes("PALETTE COLOR", 16, palette=(ramp16, ramp16, ramp16))
    out = to_display(np.array([[0, 11, 500]], dtype=np.uint16), attrs, RenderParams())
    assert out[..., 0].tolist() == [[0, 255, 255]]


def test_ybr_full_becomes_rgb_and_16_bit_rgb_is_scaled() -> None:
    ybr = np.array([[[76, 85, 255], [128, 128, 128]]], dtype=np.uint8)  # red, grey
    out = to_display(ybr, DisplayAttributes("YBR_FULL", 8), RenderParams())
    assert np.abs(out.astype(int) - [[[254, 0, 0], [128, 128, 128]]]).max() <= 1
    rgb16 = np.array([[[65535, 0, 32768]]], dtype=np.uint16)
    out = to_display(rgb16, DisplayAttributes("RGB", 16), RenderParams())
    assert out.tolist() == [[[255, 0, 128]]]
    with pytest.raises(RenderError):
        to_display(ybr, DisplayAttributes("YBR_PARTIAL_420", 8), RenderParams())


# ---------------------------------------------------------------- viewport


def _image(width: int, height: int) -> Image.Image:
    data = np.arange(width * height, dtype=np.uint32).reshape(height, width) % 256
    return Image.fromarray(data.astype(np.uint8))


def test_viewport_scales_to_fit_keeping_aspect() -> None:
    image = _image(200, 100)
    assert apply_viewport(image, Viewport(50, 50)).size == (50, 25)
    assert apply_viewport(image, Viewport(1000, 100)).size == (200, 100)
    assert apply_viewport(image, Viewport(400, 400)).size == (400, 200)
    assert apply_viewport(image, None) is image


def test_viewport_crops_then_scales() -> None:
    image = _image(200, 100)
    cropped = apply_viewport(image, Viewport(40, 40, 10, 20, 40, 20))
    assert cropped.size == (40, 20)
    expected = np.asarray(image)[20:40, 10:50]
    np.testing.assert_array_equal(
        np.asarray(apply_viewport(image, Viewport(40, 20, 10, 20, 40, 20))), expected
    )
    # Defaults: sw, sh run to the edge.
    corner = apply_viewport(image, Viewport(50, 50, 150, 50, None, None))
    np.testing.assert_array_equal(np.asarray(corner), np.asarray(image)[50:, 150:])


def test_negative_source_size_flips() -> None:
    image = _image(8, 4)
    source = np.asarray(image)
    flipped = np.asarray(apply_viewport(image, Viewport(8, 4, 8, 0, -8, 4)))
    np.testing.assert_array_equal(flipped, source[:, ::-1])
    both = np.asarray(apply_viewport(image, Viewport(8, 4, 8, 4, -8, -4)))
    np.testing.assert_array_equal(both, source[::-1, ::-1])


def test_viewport_outside_image_is_an_error() -> None:
    with pytest.raises(RenderError):
        apply_viewport(_image(8, 4), Viewport(8, 4, 20, 0, 4, 4))


# ---------------------------------------------------------------- parameters


def test_parse_window() -> None:
    assert parse_window("40,400,LINEAR") == (40.0, 400.0, "linear")
    assert parse_window("-600.5, 1500, linear-exact") == (-600.5, 1500.0, "linear-exact")
    assert parse_window("0,0.5,sigmoid") == (0.0, 0.5, "sigmoid")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "40,400",
        "40,400,linear,1",
        "a,400,linear",
        "40,b,linear",
        "40,400,cubic",
        "40,0.5,linear",
        "40,0,sigmoid",
        "40,-1,linear-exact",
        "nan,400,linear",
        "40,inf,linear",
    ],
)
def test_parse_window_errors(value: str) -> None:
    with pytest.raises(ValueError):
        parse_window(value)


def test_parse_viewport() -> None:
    assert parse_viewport("512,256") == Viewport(512, 256)
    assert parse_viewport("512,512,10,20,-100,50") == Viewport(512, 512, 10, 20, -100, 50)
    assert parse_viewport("64,64,,,100,") == Viewport(64, 64, None, None, 100, None)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "512",
        "512,a",
        "0,512",
        "512,-1",
        "512,512,1",
        "512,512,1,2,3",
        "512,512,-1,0,10,10",
        "512,512,0,0,0,10",
        "1.5,2",
        "512,512,0,0,10,10,1",
    ],
)
def test_parse_viewport_errors(value: str) -> None:
    with pytest.raises(ValueError):
        parse_viewport(value)


def test_parse_quality() -> None:
    assert parse_quality("1") == 1
    assert parse_quality("100") == 100
    for bad in ("0", "101", "", "x", "50.5", "-3"):
        with pytest.raises(ValueError):
            parse_quality(bad)


# ---------------------------------------------------------------- encoders


@pytest.mark.parametrize("name", ["CT_small.dcm", "SC_rgb.dcm"])
@pytest.mark.parametrize(("media_type", "fmt"), [("image/jpeg", "JPEG"), ("image/gif", "GIF")])
def test_jpeg_and_gif_decode_with_expected_size(name: str, media_type: str, fmt: str) -> None:
    data = Path(str(get_testdata_file(name))).read_bytes()
    params = RenderParams(viewport=Viewport(64, 32), media_type=media_type, quality=75)
    image = Image.open(io.BytesIO(render_frame(data, 0, params)))
    assert image.format == fmt
    assert image.size == (32, 32)
    image.load()


def test_jpeg_quality_changes_size() -> None:
    data = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
    low = render_frame(data, 0, RenderParams(quality=5))
    high = render_frame(data, 0, RenderParams(quality=100))
    assert len(low) < len(high)


def test_multi_frame_index_and_range() -> None:
    data = Path(str(get_testdata_file("SC_rgb_2frame.dcm"))).read_bytes()
    first = render_frame(data, 0, RenderParams(media_type="image/png"))
    second = render_frame(data, 1, RenderParams(media_type="image/png"))
    assert first != second
    with pytest.raises(IndexError):
        render_frame(data, 2, RenderParams())
    with pytest.raises(RenderError):
        render_frame(data, 0, RenderParams(media_type="image/tiff"))
