"""Frame codecs: decoding pydicom's test files (against pydicom where it can
decode, against twins or independent decoders where it cannot) and lossless
round trips for every encoder."""

from __future__ import annotations

import os
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import openjpeg
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files

from gateway.dicom.codecs import (
    DECODERS,
    ENCODERS,
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_LOSSLESS,
    J2K_LOSSLESS,
    JPEG_BASELINE,
    JPEG_LS_LOSSLESS,
    LOSSY_TRANSFER_SYNTAXES,
    RLE_LOSSLESS,
    CodecError,
    can_encode,
    decode_frame,
    decoded_photometric,
    encode_frame,
    encoded_photometric,
    pixel_dtype,
)
from gateway.dicom.frames import PixelInfo, frame_bytes, pixel_info
from gateway.dicom.part10 import read_part10

# Tested in test_frames: the walker refuses it (no Sequence Delimitation Item).
_TRUNCATED = {"emri_small_jpeg_2k_lossless_too_short.dcm"}
LOSSLESS_TARGETS = [RLE_LOSSLESS, J2K_LOSSLESS, HTJ2K_LOSSLESS, JPEG_LS_LOSSLESS]


def _decode_file(path: str) -> tuple[PixelInfo, np.ndarray[Any, Any]]:
    part10 = read_part10(Path(path).read_bytes())
    info = pixel_info(part10)
    frames = [
        decode_frame(frame_bytes(part10.data, info, i), info) for i in range(info.number_of_frames)
    ]
    return info, np.stack(frames)


def _file(name: str) -> str:
    return str(get_testdata_file(name))


@cache
def _encapsulated_files() -> tuple[str, ...]:
    """Every compressed pydicom test file (pydicom-data included)."""
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(get_testdata_files("*"), key=os.path.basename):
            if not os.path.isfile(path) or os.path.basename(path) in _TRUNCATED:
                continue
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
            ts = getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "")
            if ts and ts.is_compressed and "Rows" in ds:
                found.append(path)
    return tuple(found)


def test_this_build_supports_every_syntax() -> None:
    """The imagecodecs build the gateway depends on (see the codecs docstring)."""
    for codec in ("JPEG8", "LJPEG", "JPEGSOF3", "JPEGLS", "JPEG2K", "HTJ2K"):
        assert getattr(imagecodecs, codec).available, codec
    assert {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2",
    } <= DECODERS
    assert {
        EXPLICIT_VR_LITTLE_ENDIAN,
        RLE_LOSSLESS,
        J2K_LOSSLESS,
        HTJ2K_LOSSLESS,
        JPEG_LS_LOSSLESS,
        JPEG_BASELINE,
    } == ENCODERS


@pytest.mark.parametrize("path", _encapsulated_files(), ids=os.path.basename)
def test_decode_matches_pydicom(path: str) -> None:
    ds = pydicom.dcmread(path)
    part10 = read_part10(Path(path).read_bytes())
    info = pixel_info(part10)
    if decoded_photometric(info) != "RGB":
        ds.pixel_array_options(as_rgb=False)  # compare colour spaces like for like
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = ds.pixel_array
    except Exception:  # JPEG lossless and JPEG-LS need plugins we do not install
        pytest.skip("pydicom cannot decode this file here; see the tests below")
    _, ours = _decode_file(path)
    reference = reference.reshape(ours.shape)
    assert ours.dtype == reference.dtype.newbyteorder("<")
    difference = np.abs(ours.astype(np.int64) - reference.astype(np.int64))
    # pydicom decodes with the same libraries (or Pillow's libjpeg): exact for
    # lossless, and a small tolerance for lossy decoders built differently.
    tolerance = 2 if info.transfer_syntax_uid in LOSSY_TRANSFER_SYNTAXES else 0
    assert difference.max() <= tolerance


@pytest.mark.parametrize(
    "name",
    [
        "JPEG-LL.dcm",
        "JPGLosslessP14SV1_1s_1f_8b.dcm",
        "SC_rgb_jpeg_gdcm.dcm",
        "bad_sequence.dcm",
    ],
)
def test_jpeg_lossless_agrees_with_independent_decoders(name: str) -> None:
    """pydicom needs the GPL plugin for process 14; libjpeg-turbo, liblj92 and
    jpegsof3 are three independent implementations."""
    part10 = read_part10(Path(_file(name)).read_bytes())
    info = pixel_info(part10)
    frame = bytes(frame_bytes(part10.data, info, 0))
    ours = decode_frame(frame, info)
    for decoder in (imagecodecs.ljpeg_decode, imagecodecs.jpegsof3_decode):
        other = decoder(frame).astype(ours.dtype)  # signed data: same bits
        assert np.array_equal(other, ours)


def test_jpeg_lossless_colour_equals_the_uncompressed_twin() -> None:
    _, ours = _decode_file(_file("SC_rgb_jpeg_gdcm.dcm"))
    assert np.array_equal(ours[0], pydicom.dcmread(_file("SC_rgb.dcm")).pixel_array)


@pytest.mark.parametrize(
    ("compressed", "native"),
    [
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
        ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
    ],
)
def test_jpeg_ls_lossless_equals_the_uncompressed_twin(compressed: str, native: str) -> None:
    _, ours = _decode_file(_file(compressed))
    reference = pydicom.dcmread(_file(native)).pixel_array
    assert np.array_equal(ours, reference.reshape(ours.shape))


@pytest.mark.parametrize("name", ["SC_rgb_jls_lossy_line.dcm", "SC_rgb_jls_lossy_sample.dcm"])
def test_jpeg_ls_near_lossless_is_within_near(name: str) -> None:
    _, ours = _decode_file(_file(name))
    reference = pydicom.dcmread(_file("SC_rgb.dcm")).pixel_array
    assert np.abs(ours[0].astype(int) - reference).max() <= 2  # NEAR = 2


@pytest.mark.parametrize(
    ("name", "dtype", "shape"),
    [
        ("JPEGLSNearLossless_08.dcm", "uint8", (45, 10)),
        ("JPEGLSNearLossless_16.dcm", "<u2", (50, 10)),
    ],
)
def test_jpeg_ls_near_lossless_grey(name: str, dtype: str, shape: tuple[int, int]) -> None:
    _, ours = _decode_file(_file(name))
    assert ours.dtype == np.dtype(dtype) and ours.shape == (1, *shape)


def test_jpeg_extended_12_bit() -> None:
    """pydicom's Pillow cannot read 12-bit JPEG; libjpeg-turbo 3 can. Both
    files hold the same stream; JPEG2000_UNC is (lossy) the same image."""
    info, extended = _decode_file(_file("JPGExtended.dcm"))
    _, lossy = _decode_file(_file("JPEG-lossy.dcm"))
    assert info.bits_stored == 12 and extended.dtype == np.dtype("<u2")
    assert np.array_equal(extended, lossy)
    assert extended.max() < 4096
    same_image = pydicom.dcmread(_file("JPEG2000_UNC.dcm")).pixel_array
    assert np.abs(extended[0].astype(int) - same_image).mean() < 5


def test_openjpeg_threads_give_the_same_pixels() -> None:
    part10 = read_part10(Path(_file("MR2_J2KR.dcm")).read_bytes())
    info = pixel_info(part10)
    frame = frame_bytes(part10.data, info, 0)
    assert np.array_equal(decode_frame(frame, info, threads=2), decode_frame(frame, info))


def test_decoded_photometric() -> None:
    def info_for(name: str) -> PixelInfo:
        return pixel_info(read_part10(Path(_file(name)).read_bytes()))

    assert decoded_photometric(info_for("SC_rgb_dcmtk_+eb+cy+s2.dcm")) == "RGB"  # JPEG 422
    assert decoded_photometric(info_for("US1_J2KR.dcm")) == "RGB"  # YBR_RCT
    assert decoded_photometric(info_for("US1_J2KI.dcm")) == "RGB"  # YBR_ICT
    assert decoded_photometric(info_for("SC_ybr_full_422_uncompressed.dcm")) == "YBR_FULL"
    assert decoded_photometric(info_for("SC_ybr_full_uncompressed.dcm")) == "YBR_FULL"
    assert decoded_photometric(info_for("OBXXXX1A_rle.dcm")) == "PALETTE COLOR"
    assert decoded_photometric(info_for("RG1_J2KR.dcm")) == "MONOCHROME1"


# -- round trips ----------------------------------------------------------------

# (dtype, Bits Stored, samples per pixel, photometric)
LAYOUTS = [
    ("u1", 8, 1, "MONOCHROME2"),
    ("u2", 12, 1, "MONOCHROME2"),
    ("i2", 12, 1, "MONOCHROME2"),
    ("u2", 16, 1, "MONOCHROME1"),
    ("i2", 16, 1, "MONOCHROME2"),
    ("u1", 8, 3, "RGB"),
    ("u2", 12, 3, "RGB"),
    ("u2", 16, 3, "RGB"),
    ("u1", 8, 3, "YBR_FULL"),
]


def _info(
    ts: str, dtype: np.dtype[Any], bits_stored: int, samples: int, photometric: str
) -> PixelInfo:
    """Image Pixel attributes of one encoded frame (offsets are not used)."""
    return PixelInfo(
        rows=37,
        columns=53,
        samples_per_pixel=samples,
        bits_allocated=dtype.itemsize * 8,
        bits_stored=bits_stored,
        pixel_representation=1 if dtype.kind == "i" else 0,
        photometric_interpretation=photometric,
        planar_configuration=0,
        number_of_frames=1,
        transfer_syntax_uid=ts,
        encapsulated=ts != EXPLICIT_VR_LITTLE_ENDIAN,
        little_endian=True,
        pixel_data_tag=0x7FE00010,
        pixel_data_vr="OB",
        value_offset=0,
        value_length=0,
    )


def _image(dtype: np.dtype[Any], bits_stored: int, samples: int, seed: int = 0) -> Any:
    """A smooth gradient with noise spanning the whole Bits Stored range."""
    rng = np.random.default_rng(seed)
    lo = -(1 << (bits_stored - 1)) if dtype.kind == "i" else 0
    hi = lo + (1 << bits_stored) - 1
    shape = (37, 53) if samples == 1 else (37, 53, samples)
    ramp = np.linspace(lo, hi, num=int(np.prod(shape))).reshape(shape)
    noisy = ramp + rng.normal(0, (hi - lo) / 50, shape)
    noisy.flat[:4] = [lo, hi, lo, hi]  # the extremes must survive too
    return np.clip(np.rint(noisy), lo, hi).astype(dtype)


@pytest.mark.parametrize("target", [*LOSSLESS_TARGETS, EXPLICIT_VR_LITTLE_ENDIAN])
@pytest.mark.parametrize(
    ("kind", "bits_stored", "samples", "photometric"),
    LAYOUTS,
    ids=[f"{k}-{b}bit-{s}spp-{p}" for k, b, s, p in LAYOUTS],
)
def test_lossless_round_trip(
    target: str, kind: str, bits_stored: int, samples: int, photometric: str
) -> None:
    dtype = np.dtype(kind).newbyteorder("<")
    pixels = _image(dtype, bits_stored, samples)
    encoded = encode_frame(pixels, target, bits_stored=bits_stored, photometric=photometric)
    assert encoded_photometric(target, photometric) == photometric
    info = _info(target, dtype, bits_stored, samples, photometric)
    decoded = decode_frame(encoded, info)
    assert decoded.dtype == pixel_dtype(info)
    assert np.array_equal(decoded, pixels)


@pytest.mark.parametrize("kind", ["u4", "i4"])
def test_rle_32_bit_round_trip(kind: str) -> None:
    dtype = np.dtype(kind)
    pixels = _image(dtype, 32, 1)
    encoded = encode_frame(pixels, RLE_LOSSLESS, bits_stored=32, photometric="MONOCHROME2")
    info = _info(RLE_LOSSLESS, dtype, 32, 1, "MONOCHROME2")
    assert np.array_equal(decode_frame(encoded, info), pixels)


@pytest.mark.parametrize(("kind", "bits_stored"), [("u2", 12), ("i2", 12), ("u2", 16), ("u1", 8)])
def test_htj2k_is_readable_by_openjpeg(kind: str, bits_stored: int) -> None:
    """An independent HTJ2K decoder (pylibjpeg-openjpeg) reads our OpenJPH output."""
    dtype = np.dtype(kind)
    pixels = _image(dtype, bits_stored, 1, seed=5)
    encoded = encode_frame(
        pixels, HTJ2K_LOSSLESS, bits_stored=bits_stored, photometric="MONOCHROME2"
    )
    assert encoded[:4] == b"\xff\x4f\xff\x51"  # a bare codestream (PS3.5 A.4.4)
    assert np.array_equal(openjpeg.decode(encoded).astype(dtype), pixels)


def test_j2k_is_a_bare_reversible_codestream_with_the_stored_precision() -> None:
    pixels = _image(np.dtype("i2"), 12, 1)
    encoded = encode_frame(pixels, J2K_LOSSLESS, bits_stored=12, photometric="MONOCHROME2")
    assert encoded[:4] == b"\xff\x4f\xff\x51"
    siz = encoded.index(b"\xff\x51")
    assert encoded[siz + 40] == 0x80 | 11  # signed, 12 bits (ISO 15444-1 A.5.1 Ssiz)


def test_bits_above_bits_stored_are_dropped() -> None:
    """PS3.5 8.1.1: bits outside Bits Stored are not pixel data (old overlays)."""
    pixels = _image(np.dtype("u2"), 12, 1)
    dirty = pixels | np.uint16(0xF000)
    for target in LOSSLESS_TARGETS:
        encoded = encode_frame(dirty, target, bits_stored=12, photometric="MONOCHROME2")
        info = _info(target, np.dtype("u2"), 12, 1, "MONOCHROME2")
        assert np.array_equal(decode_frame(encoded, info), pixels), target


@pytest.mark.parametrize(
    ("samples", "photometric"), [(1, "MONOCHROME2"), (3, "RGB"), (3, "YBR_FULL")]
)
def test_jpeg_baseline_round_trip_is_close(samples: int, photometric: str) -> None:
    pixels = _image(np.dtype("u1"), 8, samples)
    encoded = encode_frame(pixels, JPEG_BASELINE, bits_stored=8, photometric=photometric)
    new_photometric = encoded_photometric(JPEG_BASELINE, photometric)
    assert new_photometric == ("MONOCHROME2" if samples == 1 else "YBR_FULL_422")
    info = _info(JPEG_BASELINE, np.dtype("u1"), 8, samples, new_photometric)
    decoded = decode_frame(encoded, info).astype(int)
    if photometric == "YBR_FULL":  # decoded as RGB: compare in RGB
        source = pydicom.pixels.convert_color_space(pixels, "YBR_FULL", "RGB").astype(int)
    else:
        source = pixels.astype(int)
    assert np.abs(decoded - source).mean() < 4


@pytest.mark.parametrize(
    ("kind", "bits_stored", "photometric"),
    [("u2", 12, "MONOCHROME2"), ("i1", 8, "MONOCHROME2"), ("u1", 8, "PALETTE COLOR")],
)
def test_jpeg_baseline_refuses(kind: str, bits_stored: int, photometric: str) -> None:
    pixels = _image(np.dtype(kind), bits_stored, 1)
    with pytest.raises(CodecError, match="cannot encode"):
        encode_frame(pixels, JPEG_BASELINE, bits_stored=bits_stored, photometric=photometric)


def test_can_encode_limits() -> None:
    common: dict[str, Any] = {"signed": False, "photometric": "MONOCHROME2"}
    assert can_encode(
        RLE_LOSSLESS, bits_allocated=32, bits_stored=32, samples_per_pixel=3, **common
    )
    assert not can_encode(
        RLE_LOSSLESS, bits_allocated=64, bits_stored=64, samples_per_pixel=3, **common
    )  # PS3.5 G.2: at most 15 segments
    assert not can_encode(
        J2K_LOSSLESS, bits_allocated=32, bits_stored=24, samples_per_pixel=1, **common
    )
    assert not can_encode(
        J2K_LOSSLESS, bits_allocated=1, bits_stored=1, samples_per_pixel=1, **common
    )
    assert not can_encode(
        EXPLICIT_VR_LITTLE_ENDIAN, bits_allocated=1, bits_stored=1, samples_per_pixel=1, **common
    )
    assert not can_encode(
        J2K_LOSSLESS,
        bits_allocated=32,
        bits_stored=32,
        samples_per_pixel=1,
        floating=True,
        **common,
    )
    assert not can_encode(
        "1.2.840.10008.1.2.4.70", bits_allocated=8, bits_stored=8, samples_per_pixel=1, **common
    )


def test_decode_errors() -> None:
    info = _info(J2K_LOSSLESS, np.dtype("u2"), 16, 1, "MONOCHROME2")
    with pytest.raises(CodecError, match="decoding"):
        decode_frame(b"\xff\x4f\xff\x51garbage", info)
    encoded = encode_frame(
        _image(np.dtype("u2"), 16, 1), J2K_LOSSLESS, bits_stored=16, photometric="MONOCHROME2"
    )
    wrong_size = PixelInfo(**{**_fields(info), "rows": 40})
    with pytest.raises(CodecError, match="shape"):
        decode_frame(encoded, wrong_size)
    unknown = PixelInfo(**{**_fields(info), "transfer_syntax_uid": "1.2.3"})
    with pytest.raises(CodecError, match="cannot decode"):
        decode_frame(encoded, unknown)


def _fields(info: PixelInfo) -> dict[str, Any]:
    return {name: getattr(info, name) for name in PixelInfo.__dataclass_fields__}


def test_native_decode_layouts() -> None:
    """Planar Configuration 1 and YBR_FULL_422 come out interleaved, full size."""
    _, planar = _decode_file(_file("color-pl.dcm"))
    _, interleaved = _decode_file(_file("color-px.dcm"))
    assert np.array_equal(planar, interleaved)
    _, ybr422 = _decode_file(_file("SC_ybr_full_422_uncompressed.dcm"))
    assert ybr422.shape == (1, 100, 100, 3)
    ds = pydicom.dcmread(_file("SC_ybr_full_422_uncompressed.dcm"))
    ds.pixel_array_options(as_rgb=False)
    assert np.array_equal(ybr422[0], ds.pixel_array)
