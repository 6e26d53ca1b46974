"""`to_explicit_vr_little_endian` on pydicom's files and on instances we
compress ourselves with imagecodecs.

Oracles for the pixels, best first: pydicom's `pixel_array` of the original
(when pydicom can decode it); the native twin pydicom ships of the same image
(JPEG-LS, JPEG Lossless, big endian files); an imagecodecs decoder other than
the one the module uses (liblj92/jpegsof3 for JPEG Lossless); imagecodecs'
own decoder (12-bit JPEG and JPEG-LS without a twin: this checks shape, byte
order and sign, not the codec). Instances we compress ourselves compare with
the exact pixels they were made from.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file, get_testdata_files
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.uid import UID

from gateway.dicom.instance_check import (
    CANNOT_UNDERSTAND,
    TRANSFER_SYNTAX_NOT_SUPPORTED,
    InstanceError,
    check_instance,
)
from gateway.dicom.json_to_part10 import IMPLEMENTATION_CLASS_UID
from gateway.dicom.to_explicit_le import to_explicit_vr_little_endian

EXPLICIT_LE = "1.2.840.10008.1.2.1"
LOSSY = {
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.203",
}
# Elements the conversion may change (see the module docstring).
CHANGED = {
    0x00280004,  # Photometric Interpretation (YBR -> RGB)
    0x00280006,  # Planar Configuration
    0x00282110,  # Lossy Image Compression
    0x00282114,  # Lossy Image Compression Method
    0x7FE00001,  # Extended Offset Table
    0x7FE00002,  # Extended Offset Table Lengths
    0x7FE00010,  # Pixel Data
}

# Files the conversion refuses, and why.
EXPECTED_FAILURES: dict[str, tuple[int, str]] = {
    # The J2K codestream is 250 bytes for a 1024x256 image: cut short.
    "JPEG2000-embedded-sequence-delimiter.dcm": (
        TRANSFER_SYNTAX_NOT_SUPPORTED,
        "cannot decode JPEG 2000 Image Compression",
    ),
    # Test datasets whose File Meta Information has no Media Storage SOP Class
    # UID: pydicom will not write a Part 10 file without one.
    "empty_charset_LEI.dcm": (CANNOT_UNDERSTAND, "cannot write the instance"),
    "nested_priv_SQ.dcm": (CANNOT_UNDERSTAND, "cannot write the instance"),
}

# pydicom ships the same image uncompressed, or little endian.
NATIVE_TWIN = {
    "emri_small_jpeg_ls_lossless.dcm": "emri_small.dcm",
    "MR_small_jpeg_ls_lossless.dcm": "MR_small.dcm",
    "SC_rgb_jpeg_gdcm.dcm": "SC_rgb.dcm",
    "SC_rgb_jls_lossy_line.dcm": "SC_rgb.dcm",  # near-lossless, NEAR=2
    "SC_rgb_jls_lossy_sample.dcm": "SC_rgb.dcm",
    "emri_small_big_endian.dcm": "emri_small.dcm",
    "MR_small_bigendian.dcm": "MR_small.dcm",
    "MR_small_expb.dcm": "MR_small.dcm",
    "MR_small_implicit.dcm": "MR_small.dcm",
    "OBXXXX1A_expb.dcm": "OBXXXX1A.dcm",
    "OBXXXX1A_expb_2frame.dcm": "OBXXXX1A_2frame.dcm",
    "SC_rgb_expb.dcm": "SC_rgb.dcm",
    "SC_rgb_expb_2frame.dcm": "SC_rgb_2frame.dcm",
    "SC_rgb_expb_16bit.dcm": "SC_rgb_16bit.dcm",
    "SC_rgb_expb_16bit_2frame.dcm": "SC_rgb_16bit_2frame.dcm",
    "SC_rgb_expb_32bit.dcm": "SC_rgb_32bit.dcm",
    "SC_rgb_expb_32bit_2frame.dcm": "SC_rgb_32bit_2frame.dcm",
    "gdcm-US-ALOKA-16_big.dcm": "gdcm-US-ALOKA-16.dcm",
    "liver_expb.dcm": "liver.dcm",
    "liver_expb_1frame.dcm": "liver_1frame.dcm",
    "rtdose_expb.dcm": "rtdose.dcm",
    "rtdose_expb_1frame.dcm": "rtdose_1frame.dcm",
    "SC_rgb_small_odd_big_endian.dcm": "SC_rgb_small_odd.dcm",
}
NEAR_LOSSLESS_TOLERANCE = {"SC_rgb_jls_lossy_line.dcm": 2, "SC_rgb_jls_lossy_sample.dcm": 2}


def _converted_files() -> list[Path]:
    """pydicom's Part 10 files in any transfer syntax but Explicit VR LE."""
    files = []
    for name in [*get_testdata_files(), *get_charset_files()]:
        path = Path(name)
        if not path.is_file():
            continue
        try:
            meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        except Exception:
            continue  # not a Part 10 file
        syntax = meta.get("TransferSyntaxUID")
        if syntax and syntax != EXPLICIT_LE:
            files.append(path)
    return sorted(files, key=lambda p: p.name)


def _read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _pixels_or_none(ds: pydicom.Dataset) -> np.ndarray[Any, Any] | None:
    try:
        return np.asarray(ds.pixel_array)
    except Exception:  # pydicom has no plugin for it
        return None


# --- pydicom's files -----------------------------------------------------------------


@pytest.mark.parametrize("path", _converted_files(), ids=lambda p: p.name)
def test_pydicom_files(path: Path) -> None:
    data = path.read_bytes()
    if path.name in EXPECTED_FAILURES:
        code, reason = EXPECTED_FAILURES[path.name]
        with pytest.raises(InstanceError) as info:
            to_explicit_vr_little_endian(data)
        assert info.value.failure_code == code
        assert info.value.reason.startswith(reason)
        return

    original = pydicom.dcmread(path)
    syntax = str(original.file_meta.TransferSyntaxUID)
    out_bytes = to_explicit_vr_little_endian(data)
    out = _read(out_bytes)

    assert out_bytes[128:132] == b"DICM"
    assert out.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert out.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert out.get("SOPInstanceUID") == original.get("SOPInstanceUID")  # kept
    # pydicom's enforce_file_format takes the Media Storage UIDs from the
    # dataset, which corrects the files whose meta contradicts it.
    meta_uid = original.get("SOPInstanceUID", original.file_meta.MediaStorageSOPInstanceUID)
    assert out.file_meta.MediaStorageSOPInstanceUID == meta_uid
    _assert_other_attributes_kept(original, out)

    if "PixelData" not in original:
        return
    assert not out["PixelData"].is_undefined_length
    if syntax in LOSSY:
        assert out.LossyImageCompression == "01"
    _assert_pixels(path, original, out)


def _assert_other_attributes_kept(original: pydicom.Dataset, out: pydicom.Dataset) -> None:
    for element in original:
        if element.tag in CHANGED or element.tag.group == 0x0002:
            continue
        if element.tag.element == 0:
            continue  # pydicom drops group lengths (retired, PS3.5 7.2)
        if (
            element.VR in ("OW", "OF", "OL", "OD", "OV")
            and original.file_meta.get("TransferSyntaxUID") == pydicom.uid.ExplicitVRBigEndian
        ):
            continue  # byte swapped: compared with the little endian twin
        assert out[element.tag].value == element.value, element.tag


def _assert_pixels(path: Path, original: pydicom.Dataset, out: pydicom.Dataset) -> None:
    converted = np.asarray(out.pixel_array)
    expected = _pixels_or_none(original)
    if expected is not None:
        # pydicom decodes YCbCr JPEG to RGB as we do; lossless or not, the
        # same decoder gives the same pixels.
        assert np.array_equal(converted, expected)
    twin_name = NATIVE_TWIN.get(path.name)
    if twin_name is not None:
        twin = pydicom.dcmread(get_testdata_file(twin_name))
        tolerance = NEAR_LOSSLESS_TOLERANCE.get(path.name, 0)
        if tolerance:
            difference = np.abs(converted.astype(int) - np.asarray(twin.pixel_array).astype(int))
            assert difference.max() <= tolerance
        else:  # the very bytes, which also checks byte swapping and sign
            assert out.PixelData == twin.PixelData
            _assert_same_binary_values(twin, out)
        return
    if expected is None:
        assert np.array_equal(converted, _imagecodecs_reference(original))


def _assert_same_binary_values(twin: pydicom.Dataset, out: pydicom.Dataset) -> None:
    """LUT data and other OW values are little endian now (PS3.5 7.3)."""
    for element in twin.iterall():
        if element.VR in ("OW", "OF", "OL", "OD", "OV") and element.tag in out:
            assert out[element.tag].value == element.value, element.tag


def _imagecodecs_reference(ds: pydicom.Dataset) -> np.ndarray[Any, Any]:
    """Decode with imagecodecs directly, by another decoder where there is one."""
    syntax = str(ds.file_meta.TransferSyntaxUID)
    decode: Callable[[bytes], Any] = {
        "1.2.840.10008.1.2.4.51": imagecodecs.jpeg8_decode,
        "1.2.840.10008.1.2.4.57": imagecodecs.jpegsof3_decode,  # not libjpeg-turbo
        "1.2.840.10008.1.2.4.70": imagecodecs.jpegsof3_decode,
        "1.2.840.10008.1.2.4.80": imagecodecs.jpegls_decode,
        "1.2.840.10008.1.2.4.81": imagecodecs.jpegls_decode,
    }[syntax]
    count = int(ds.get("NumberOfFrames", 1) or 1)
    frames = [decode(frame) for frame in generate_frames(ds.PixelData, number_of_frames=count)]
    array = np.stack(frames) if count > 1 else frames[0]
    if ds.PixelRepresentation == 1:
        shift = 16 - ds.BitsStored
        array = (array.astype(np.int16) << shift) >> shift
    return np.asarray(array)


def test_every_table_entry_is_a_pydicom_file() -> None:
    names = {path.name for path in _converted_files()}
    assert set(EXPECTED_FAILURES) <= names
    assert set(NATIVE_TWIN) <= names


def test_pydicom_decompress_would_change_the_uid() -> None:
    """Why we do not call `Dataset.decompress()`: it makes a new SOP Instance
    UID unless told not to (pydicom 3)."""
    ds = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    uid = ds.SOPInstanceUID
    ds.decompress()
    assert ds.SOPInstanceUID != uid
    out = _read(
        to_explicit_vr_little_endian(Path(get_testdata_file("MR_small_RLE.dcm")).read_bytes())
    )
    assert out.SOPInstanceUID == uid


def test_output_passes_the_instance_check() -> None:
    data = Path(get_testdata_file("emri_small_jpeg_2k_lossless.dcm")).read_bytes()
    before = check_instance(data)
    after = check_instance(to_explicit_vr_little_endian(data))
    assert after.transfer_syntax_uid == EXPLICIT_LE
    assert (after.sop_instance_uid, after.study_instance_uid) == (
        before.sop_instance_uid,
        before.study_instance_uid,
    )


# --- instances we compress ourselves ---------------------------------------------------


def _ct_frames() -> list[np.ndarray[Any, Any]]:
    """Three signed 16-bit frames with negative values (CT_small - 1024)."""
    ct = np.asarray(pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array, dtype=np.int16)
    first = ct - 1024
    return [first, np.flipud(first).copy(), (first // 2).astype(np.int16)]


def _rgb_frame() -> np.ndarray[Any, Any]:
    return np.asarray(pydicom.dcmread(get_testdata_file("SC_rgb.dcm")).pixel_array)


def _instance(
    syntax: str,
    fragments: list[bytes],
    pixels: list[np.ndarray[Any, Any]],
    *,
    bits_stored: int | None = None,
    photometric: str | None = None,
    extended: bool = False,
    planar: int = 0,
) -> bytes:
    """A Part 10 file of CT_small's attributes around `fragments`."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    first = pixels[0]
    samples = first.shape[2] if first.ndim == 3 else 1
    ds.Rows, ds.Columns = first.shape[:2]
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric or ("RGB" if samples == 3 else "MONOCHROME2")
    ds.BitsAllocated = first.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if first.dtype.kind == "i" else 0
    if samples > 1:
        ds.PlanarConfiguration = planar
    if len(pixels) > 1:
        ds.NumberOfFrames = len(pixels)
    if extended:
        value, offsets, lengths = encapsulate_extended(fragments)
        ds.PixelData = value
        ds.ExtendedOffsetTable = offsets
        ds.ExtendedOffsetTableLengths = lengths
    else:
        ds.PixelData = encapsulate(fragments, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    out = io.BytesIO()
    # force_encoding: pydicom 3.0 refuses transfer syntaxes it does not know
    # (JPEG XL) unless told the encoding.
    pydicom.dcmwrite(out, ds, implicit_vr=False, little_endian=True, force_encoding=True)
    return out.getvalue()


def _as_unsigned(frame: np.ndarray[Any, Any], bits: int) -> np.ndarray[Any, Any]:
    """The stored bit pattern, as JPEG Lossless and JPEG-LS encode signed
    pixels (PS3.5 A.4.1, A.4.3)."""
    return (frame.view(np.uint16) & ((1 << bits) - 1)).astype(np.uint16)


SYNTHETIC: dict[str, Callable[[], tuple[bytes, list[np.ndarray[Any, Any]]]]] = {}


def synthetic(name: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    def register(make: Callable[[], Any]) -> Callable[[], Any]:
        SYNTHETIC[name] = make
        return make

    return register


@synthetic("JPEG Lossless SV1 (.70), signed 16-bit, 3 frames")
def _jpeg_lossless_sv1() -> tuple[bytes, list[np.ndarray[Any, Any]]]:
    frames = _ct_frames()
    encoded = [
        imagecodecs.jpeg8_encode(_as_unsigned(f, 16), lossless=True, predictor=1) for f in frames
    ]
    return _instance("1.2.840.10008.1.2.4.70", encoded, frames), frames


@synthetic("JPEG Lossless (.57), predictor 4, extended offset table")
def _jpeg_lossless_57() -> tuple[bytes, list[np.ndarray[Any, Any]]]:
    # Not predictors 5-7: with 16-bit samples libjpeg-turbo's encoder and all
    # three decoders disagree on the overflow of (Rb - Rc) / 2, a known
    # ambiguity of 16-bit lossless JPEG.
    frames = _ct_frames()
    encoded = [
        imagecodecs.jpeg8_encode(_as_unsigned(f, 16), lossless=True, predictor=4) for f in frames
    ]
    return _instance("1.2.840.10008.1.2.4.57", encoded, frames, extended=True), frames


@synthetic("JPEG Lossless (.70), RGB")
def _jpeg_lossless_rgb() -> tuple[bytes, list[np.ndarray[Any, Any]]]:
    frame = _rgb_frame()
    encoded = imagecodecs.jpeg8_encode(frame, lossless=True, predictor=1)
    return _instance("1.2.840.10008.1.2.4.70", [encoded], [frame]), [frame]


@synthetic("JPEG-LS lossless (.80), signed 12-bit stored in 16")
def _jpeg_ls_signed_12() -> tuple[bytes, list[np.ndarray[Any, Any]]]:
    frames = [np.clip(f, -2048, 2047).astype(np.int16) for f in _ct_frames()]
    encoded = [imagecodecs.jpegls_encode(_as_unsigned(f, 12)) for f in frames]
    return _instance("1.2.840.10008.1.2.4.80", encoded, frames, bits_stored=12), frames


@synthetic("JPEG-LS lossless (.80), RGB")
def _jpeg_ls_rgb() -> tuple[bytes, list[np.ndarray[Any, Any]]]:
    frame = _rgb_frame()
    return _instance("1.2.840.10008.1.2.4.80", [imagecodecs.jpegls_encode(frame)], [frame]), [frame]


@synthetic("JPEG 2000 lossless (.90), signed 16-bit, 3 frames")
def _jpeg_2000() -> tuple[bytes, list[np.ndarray[Any, Any]]]:
    frames = _ct_frames()
    encoded = [
        imagecodecs.jpeg2k_encode(f, level=0, codecformat="J2K", reversible=True) for f in frames
    ]
    return _instance("1.2.840.10008.1.2.4.90", encoded, frames), frames


@synthetic("JPEG 2000 Part 2 lossless (.92), a Part 1 codestream")
def _jpeg_2000_part_2() -> tuple[bytes, list[np.ndarray[Any, Any]]]:
    frames = _ct_frames()[:1]
    encoded = [imagecodecs.jpeg2k_encode(frames[0], level=0, codecformat="J2K", reversible=True)]
    return _instance("1.2.840.10008.1.2.4.92", encoded, frames), frames


@synthetic("HTJ2K lossless (.201), signed 16-bit, 3 frames")
def _htj2k() -> tuple[bytes, list[np.ndarray[Any, Any]]]:
    frames = _ct_frames()
    encoded = [imagecodecs.htj2k_encode(f, reversible=True) for f in frames]
    return _instance("1.2.840.10008.1.2.4.201", encoded, frames), frames


@synthetic("HTJ2K RPCL (.202), RGB")
def _htj2k_rgb() -> tuple[bytes, list[np.ndarray[Any, Any]]]:
    frame = _rgb_frame()
    encoded = imagecodecs.htj2k_encode(frame, reversible=True, rgb=False)
    return _instance("1.2.840.10008.1.2.4.202", [encoded], [frame]), [frame]


@synthetic("JPEG XL lossless (.110), unsigned 16-bit, 3 frames")
def _jpeg_xl() -> tuple[bytes, list[np.ndarray[Any, Any]]]:
    frames = [np.clip(f, 0, None).astype(np.uint16) for f in _ct_frames()]
    encoded = [imagecodecs.jpegxl_encode(f, lossless=True) for f in frames]
    return _instance("1.2.840.10008.1.2.4.110", encoded, frames), frames


@synthetic("JPEG XL lossless (.110), RGB")
def _jpeg_xl_rgb() -> tuple[bytes, list[np.ndarray[Any, Any]]]:
    frame = _rgb_frame()
    encoded = imagecodecs.jpegxl_encode(frame, lossless=True)
    return _instance("1.2.840.10008.1.2.4.110", [encoded], [frame]), [frame]


@synthetic("Encapsulated Uncompressed (.1.98), RGB planar")
def _encapsulated_uncompressed() -> tuple[bytes, list[np.ndarray[Any, Any]]]:
    frame = _rgb_frame()
    planar = np.ascontiguousarray(frame.transpose(2, 0, 1)).tobytes()
    return _instance("1.2.840.10008.1.2.1.98", [planar], [frame], planar=1), [frame]


@synthetic("RLE (.5), signed 16-bit, 3 frames")
def _rle() -> tuple[bytes, list[np.ndarray[Any, Any]]]:
    from pydicom.pixels.encoders import RLELosslessEncoder

    frames = _ct_frames()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    encoded = [
        RLELosslessEncoder.encode(
            f.tobytes(),
            rows=ds.Rows,
            columns=ds.Columns,
            samples_per_pixel=1,
            bits_allocated=16,
            bits_stored=16,
            pixel_representation=1,
            photometric_interpretation="MONOCHROME2",
            number_of_frames=1,
        )
        for f in frames
    ]
    return _instance("1.2.840.10008.1.2.5", encoded, frames), frames


@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_lossless_round_trip_gives_the_exact_pixels(name: str) -> None:
    data, frames = SYNTHETIC[name]()
    out = _read(to_explicit_vr_little_endian(data))
    expected = np.stack(frames) if len(frames) > 1 else frames[0]
    assert out.PixelData == expected.astype(expected.dtype.newbyteorder("<")).tobytes()
    assert np.array_equal(out.pixel_array, expected)
    assert out.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert "ExtendedOffsetTable" not in out
    assert "LossyImageCompression" not in out
    if expected.ndim == 4 or (len(frames) == 1 and expected.ndim == 3):
        assert out.PlanarConfiguration == 0


def test_12_bit_lossy_jpeg_is_decoded_and_marked_lossy() -> None:
    """pydicom's Pillow plugin cannot decode 12-bit JPEG; libjpeg-turbo can."""
    frames = [np.clip(f, 0, 4095).astype(np.uint16) for f in _ct_frames()[:1]]
    encoded = [imagecodecs.jpeg8_encode(frames[0], level=95, bitspersample=12)]
    data = _instance("1.2.840.10008.1.2.4.51", encoded, frames, bits_stored=12)
    out = _read(to_explicit_vr_little_endian(data))
    difference = np.abs(out.pixel_array.astype(int) - frames[0].astype(int))
    assert difference.max() <= 16
    assert out.LossyImageCompression == "01"
    assert out.LossyImageCompressionMethod == "ISO_10918_1"


def test_a_syntax_that_may_be_lossy_is_marked_lossy() -> None:
    """HTJ2K (.203) may be lossless or not; the UID cannot tell, so the
    decoded image is marked lossy (the safe side, PS3.3 C.7.6.1.1.5)."""
    frames = _ct_frames()[:1]
    encoded = [imagecodecs.htj2k_encode(frames[0], reversible=True)]
    out = _read(to_explicit_vr_little_endian(_instance("1.2.840.10008.1.2.4.203", encoded, frames)))
    assert np.array_equal(out.pixel_array, frames[0])
    assert out.LossyImageCompression == "01"
    assert out.LossyImageCompressionMethod == "ISO_15444_15"


def test_ycbcr_jpeg_becomes_rgb() -> None:
    data = Path(get_testdata_file("SC_rgb_dcmtk_+eb+cy+np.dcm")).read_bytes()
    out = _read(to_explicit_vr_little_endian(data))
    assert out.PhotometricInterpretation == "RGB"
    assert out.PlanarConfiguration == 0
    twin = np.asarray(pydicom.dcmread(get_testdata_file("SC_rgb.dcm")).pixel_array)
    # Lossy 4:2:2: close to the original colours, not equal.
    assert np.abs(out.pixel_array.astype(int) - twin.astype(int)).mean() < 8


def test_an_existing_lossy_flag_is_kept() -> None:
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.LossyImageCompressionRatio = "12.5"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    out = _read(to_explicit_vr_little_endian(buffer.getvalue()))
    assert out.LossyImageCompressionRatio == 12.5


# --- the imagecodecs fallback for what pydicom decodes too ----------------------------

FALLBACK_FILES = {
    "US1_J2KR.dcm": 0,  # JPEG 2000 lossless, YBR_RCT
    "US1_J2KI.dcm": 1,  # JPEG 2000 lossy, YBR_ICT
    "MR2_J2KR.dcm": 0,  # 12 bits stored
    "emri_small_jpeg_2k_lossless.dcm": 0,  # 10 frames
    "J2K_pixelrep_mismatch.dcm": 0,  # signed, codestream says unsigned
    "SC_rgb_jpeg_dcmtk.dcm": 1,  # JPEG baseline YBR_FULL
    "SC_rgb_dcmtk_+eb+cy+s2.dcm": 1,  # JPEG baseline YBR_FULL_422
    "SC_jpeg_no_color_transform.dcm": 1,  # JPEG baseline RGB, no transform
}


@pytest.mark.parametrize("name", list(FALLBACK_FILES))
def test_imagecodecs_fallback_matches_pydicom(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """When pydicom's plugins fail, imagecodecs takes over with the same
    pixels and the same colour space."""
    data = Path(get_testdata_file(name)).read_bytes()
    with_pydicom = _read(to_explicit_vr_little_endian(data))

    def no_pydicom(*args: object) -> None:
        raise RuntimeError("pydicom plugin missing")

    monkeypatch.setattr("gateway.dicom.to_explicit_le._decode_with_pydicom", no_pydicom)
    with_imagecodecs = _read(to_explicit_vr_little_endian(data))
    assert with_imagecodecs.PhotometricInterpretation == with_pydicom.PhotometricInterpretation
    difference = np.abs(
        with_imagecodecs.pixel_array.astype(int) - with_pydicom.pixel_array.astype(int)
    )
    assert difference.max() <= FALLBACK_FILES[name]


@pytest.mark.parametrize(
    "name",
    [
        "JPEG 2000 lossless (.90), signed 16-bit, 3 frames",
        "HTJ2K lossless (.201), signed 16-bit, 3 frames",
    ],
)
def test_imagecodecs_fallback_is_exact_for_lossless_jpeg_2000(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, frames = SYNTHETIC[name]()

    def no_pydicom(*args: object) -> None:
        raise RuntimeError("pydicom plugin missing")

    monkeypatch.setattr("gateway.dicom.to_explicit_le._decode_with_pydicom", no_pydicom)
    out = _read(to_explicit_vr_little_endian(data))
    assert np.array_equal(out.pixel_array, np.stack(frames))


# --- failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("syntax", "name"),
    [
        ("1.2.840.10008.1.2.4.90", "JPEG 2000 Image Compression (Lossless Only)"),
        ("1.2.840.10008.1.2.4.70", UID("1.2.840.10008.1.2.4.70").name),
        ("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless Image Compression"),
        ("1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level"),
        # JPEG XL is no transfer syntax for pydicom 3.0 (pynetdicom, once
        # imported, names it): the reason uses whichever name pydicom has.
        ("1.2.840.10008.1.2.4.111", UID("1.2.840.10008.1.2.4.111").name),
    ],
)
def test_undecodable_pixel_data_is_c122(syntax: str, name: str) -> None:
    frame = np.zeros((8, 8), dtype=np.uint16)
    data = _instance(syntax, [b"\xff\xd8 not a codestream \xff\xd9"], [frame])
    with pytest.raises(InstanceError) as info:
        to_explicit_vr_little_endian(data)
    assert info.value.failure_code == TRANSFER_SYNTAX_NOT_SUPPORTED
    assert info.value.reason == f"cannot decode {name}"


@pytest.mark.parametrize("data", [b"", b"garbage" * 10, b"\0" * 128 + b"DICM" + b"\xff" * 40])
def test_unreadable_input_is_c000(data: bytes) -> None:
    with pytest.raises(InstanceError) as info:
        to_explicit_vr_little_endian(data)
    assert info.value.failure_code == CANNOT_UNDERSTAND


# --- threads -------------------------------------------------------------------------


def test_parallel_conversions_give_the_sequential_results() -> None:
    """Runs in a worker pool (DESIGN.md 4): no shared mutable state."""
    names = [
        "emri_small_jpeg_ls_lossless.dcm",
        "JPEG-LL.dcm",
        "MR_small_RLE.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
        "SC_rgb_dcmtk_+eb+cy+s2.dcm",
        "emri_small_big_endian.dcm",
        "image_dfl.dcm",
        "JPGExtended.dcm",
    ]
    inputs = [Path(get_testdata_file(name)).read_bytes() for name in names] * 4
    sequential = [to_explicit_vr_little_endian(data) for data in inputs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(to_explicit_vr_little_endian, inputs))
    assert parallel == sequential
